"""Softmax cross-entropy with optional label smoothing, mean over the batch.

    L = -(1/B) sum_b sum_k t_bk log softmax(logits_b)_k,   t = (1 - eps) onehot(y) + eps / K
    dL/dlogits = (softmax(logits) - t) / B
"""
from .. import kernels_cupy
from ..backend import get_array_module


def log_softmax(x):
    xp = get_array_module(x)
    s = x - x.max(axis=-1, keepdims=True)
    return s - xp.log(xp.exp(s).sum(axis=-1, keepdims=True))


def smoothed_targets(labels, num_classes, label_smoothing, dtype):
    """Integer labels (B,) -> target distributions (B, K); soft targets (B, K) pass through."""
    xp = get_array_module(labels)
    if labels.ndim == 2:
        t = labels.astype(dtype, copy=False)
    else:
        t = xp.zeros((labels.shape[0], num_classes), dtype=dtype)
        t[xp.arange(labels.shape[0]), labels] = 1.0
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / num_classes
    return t


def cross_entropy(logits, labels, label_smoothing=0.0):
    """logits (B, K), labels (B,) ints in [0, K) or (B, K) soft targets -> (loss, dlogits)."""
    xp = get_array_module(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, K), got shape {logits.shape}")
    B, K = logits.shape
    if labels.shape not in ((B,), (B, K)):
        raise ValueError(f"labels must be ({B},) or ({B}, {K}), got shape {labels.shape}")
    if labels.ndim == 1:
        if labels.dtype.kind not in "iu":
            raise ValueError(f"integer labels expected, got dtype {labels.dtype}")
        if xp.__name__ == "numpy" and B and (labels.min() < 0 or labels.max() >= K):
            raise ValueError(f"labels must lie in [0, {K}), got range "
                             f"[{labels.min()}, {labels.max()}]")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if kernels_cupy.enabled(logits) and logits.flags.c_contiguous:     # one fused kernel
        t = smoothed_targets(labels, K, 0.0, logits.dtype)
        t = t if t.flags.c_contiguous else xp.ascontiguousarray(t)
        dlogits, row_loss = xp.empty_like(logits), xp.empty(B, logits.dtype)
        kernels_cupy.cross_entropy_rows(logits, t, label_smoothing, dlogits, row_loss)
        return row_loss.sum(), dlogits
    t = smoothed_targets(labels, K, label_smoothing, logits.dtype)
    logp = log_softmax(logits)
    loss = -(t * logp).sum() / B
    dlogits = (xp.exp(logp) - t) / B
    return loss, dlogits
