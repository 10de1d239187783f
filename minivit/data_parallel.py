"""Data parallelism over the CPU cores: one share of the batch per thread.

A ViT treats every image on its own (LayerNorm normalises each token; attention mixes the tokens
of one image), so a batch splits into contiguous shares x_1..x_n, one per thread, each run through
the whole network on its own core:

    logits = [f(x_1); ...; f(x_n)]                   the shares' forwards, side by side in time
    L, dlogits = loss(logits, targets)               the whole batch, as one
    dW = sum_s dW_s,  dW_s = backward(dlogits_s)     the shares' backwards, summed in share order

Backward is linear in dlogits, so the sum is exactly the batch's gradient. The threads meet twice
a step (after the forwards and after the backwards) instead of once per layer op, and every GEMM
and elementwise pass of a share runs on one core (OpenBLAS at one thread: minivit.blas).

When: NumPy, minivit owning the cores (minivit.blas.owned_threads: more than one thread and an
OpenBLAS it can hold at one thread), at least 2 * MIN_SHARE images, and a model without batch
statistics (BatchNorm state: the hybrid and CMT are never split). train.train_step also keeps
fp16 mixed precision whole. Otherwise: one share, the plain path.
"""
import functools

from . import blas, parallel
from .backend import get_array_module
from .layers.loss import cross_entropy

MIN_SHARE = 8               # images per share at least: smaller shares lose more than they gain


def num_shares(x, state=None) -> int:
    """How many shares the batch x splits into (1: not split)."""
    xp = get_array_module(x)
    if xp.__name__ != "numpy" or state or not blas.owning() or parallel.inline():
        return 1
    return max(1, min(parallel.num_threads(), x.shape[0] // MIN_SHARE))


def share_rngs(rng, n):
    """n generators for the shares' dropout masks, seeded from rng (None stays None)."""
    if rng is None:
        return [None] * n
    import numpy as np  # noqa: PLC0415 - host generators: shares run on NumPy only
    return [np.random.default_rng(int(s)) for s in rng.integers(0, 2**63 - 1, n)]


def _share_forward(spec, params, x, cfg, train, rng, state, workspace):
    return spec.forward(params, x, cfg, train, rng, state, workspace=workspace)


def _share_backward(spec, dlogits, cache):
    return spec.backward(dlogits, cache, input_grad=False)[1]


def forward_backward(spec, params, x, targets, cfg, label_smoothing=0.0, rng=None,
                     workspace=None):
    """(logits, loss, grads) of the batch x, each share's forward and backward on its own thread.
    spec: a minivit.models.ModelSpec of a model without BatchNorm state."""
    xp = get_array_module(x)
    n = num_shares(x)
    if n == 1:
        logits, cache = spec.forward(params, x, cfg, True, rng, {}, workspace=workspace)
        loss, dlogits = cross_entropy(logits, targets, label_smoothing)
        return logits, loss, _share_backward(spec, dlogits, cache)
    shares = parallel.split(x.shape[0], n)
    wss = [None] * n if workspace is None else workspace.shares(n)
    outs = parallel.run_shares([
        functools.partial(_share_forward, spec, params, x[lo:hi], cfg, True, r, {}, w)
        for (lo, hi), r, w in zip(shares, share_rngs(rng, n), wss, strict=True)])
    logits = xp.concatenate([o[0] for o in outs])                   # (B, K)
    loss, dlogits = cross_entropy(logits, targets, label_smoothing)
    grads = parallel.run_shares([
        functools.partial(_share_backward, spec, dlogits[lo:hi], cache)
        for (lo, hi), (_, cache) in zip(shares, outs, strict=True)])
    total = grads[0]                        # every grad a fresh array of its share: add in place
    for g in grads[1:]:                     # in share order: the same sums run after run
        for k in total:
            total[k] += g[k]
    return logits, loss, total


def forward(spec, params, x, cfg, state=None, workspace=None):
    """Evaluation logits of the batch x, each share's forward on its own thread."""
    n = num_shares(x, state)
    if n == 1:
        return spec.forward(params, x, cfg, False, None, state, workspace=workspace)[0]
    shares = parallel.split(x.shape[0], n)
    wss = [None] * n if workspace is None else workspace.shares(n)
    outs = parallel.run_shares([
        functools.partial(_share_forward, spec, params, x[lo:hi], cfg, False, None, state, w)
        for (lo, hi), w in zip(shares, wss, strict=True)])
    return get_array_module(x).concatenate([o[0] for o in outs])
