"""Data parallelism over the CPU cores: one share of the batch per thread.

A ViT treats every image on its own (LayerNorm normalises each token; attention mixes the tokens
of one image), so a batch splits into contiguous shares x_1..x_n, one per thread, each run through
the whole network on its own core:

    logits = [f(x_1); ...; f(x_n)]                   the shares' forwards, side by side in time
    L, dlogits = loss(logits, targets)               the whole batch, as one
    dW = sum_s dW_s,  dW_s = backward(dlogits_s)     the shares' backwards, summed in share order

Backward is linear in dlogits, so the sum is exactly the batch's gradient. The threads meet twice
a step (after the forwards and after the backwards) instead of once per layer op, and every GEMM
and elementwise pass of a share runs on one core (OpenBLAS at one thread: parallel.owned_threads).
Only where minivit owns the cores (NumPy, OpenBLAS, more than one thread) and the model keeps no
batch statistics (BatchNorm state): elsewhere one share, the plain path.
"""
import numpy as np

from . import parallel
from .backend import get_array_module
from .layers.loss import cross_entropy

MIN_SHARE = 8               # images per share at least: smaller shares lose more than they gain


def num_shares(x, state=None) -> int:
    """How many shares the batch x splits into (1: not split)."""
    if get_array_module(x) is not np or state or not parallel.owning():
        return 1
    return max(1, min(parallel.num_threads(), x.shape[0] // MIN_SHARE))


def share_rngs(rng, n):
    """n generators for the shares' dropout, drawn from rng (None stays None)."""
    if rng is None:
        return [None] * n
    return [np.random.default_rng(int(s)) for s in rng.integers(0, 2**63 - 1, n)]


def _shares(x, workspace, n):
    bounds = parallel.split(x.shape[0], n)
    wss = [None] * n if workspace is None else workspace.shares(n)
    return bounds, wss


def forward_backward(spec, params, x, targets, cfg, label_smoothing=0.0, rng=None,
                     workspace=None):
    """(logits, loss, grads) of the batch, each share's forward and backward on its own thread.
    spec: a minivit.models.ModelSpec (a model without BatchNorm state)."""
    n = num_shares(x)
    if n == 1:
        logits, cache = spec.forward(params, x, cfg, True, rng, {}, workspace=workspace)
        loss, dlogits = cross_entropy(logits, targets, label_smoothing)
        return logits, loss, spec.backward(dlogits, cache, input_grad=False)[1]
    bounds, wss = _shares(x, workspace, n)
    rngs = share_rngs(rng, n)
    outs = parallel.run_shares([
        lambda i=i, lo=lo, hi=hi: spec.forward(params, x[lo:hi], cfg, True, rngs[i], {},
                                               workspace=wss[i])
        for i, (lo, hi) in enumerate(bounds)])
    logits = np.concatenate([o[0] for o in outs])                           # (B, K)
    loss, dlogits = cross_entropy(logits, targets, label_smoothing)
    grads = parallel.run_shares([
        lambda lo=lo, hi=hi, cache=o[1]: spec.backward(dlogits[lo:hi], cache,
                                                       input_grad=False)[1]
        for (lo, hi), o in zip(bounds, outs, strict=True)])
    total = grads[0]
    for g in grads[1:]:                     # share order: the same sums run after run
        for k in total:
            total[k] += g[k]
    return logits, loss, total


def forward(spec, params, x, cfg, state=None, workspace=None):
    """Evaluation logits of the batch x, each share's forward on its own thread."""
    n = num_shares(x, state)
    if n == 1:
        return spec.forward(params, x, cfg, False, None, state, workspace=workspace)[0]
    bounds, wss = _shares(x, workspace, n)
    outs = parallel.run_shares([
        lambda lo=lo, hi=hi, w=w: spec.forward(params, x[lo:hi], cfg, False, None, state,
                                               workspace=w)[0]
        for (lo, hi), w in zip(bounds, wss, strict=True)])
    return np.concatenate(outs)
