"""Dropout and stochastic depth (drop-path), with an explicit seeded generator.

Inverted dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p) per element; identity when not
training or p == 0. Drop-path draws one m per sample and scales a whole residual branch.
"""
from .. import kernels_cupy
from ..backend import constant, get_array_module


def _draw_dtype(dtype):
    return dtype if dtype in ("float32", "float64") else "float32"      # no float16 generator


def _keep_mask(rng, shape, p, dtype):
    return (rng.random(shape, dtype=_draw_dtype(dtype)) >= p).astype(dtype) * (1.0 / (1.0 - p))


def dropout_forward(x, p, rng, train):
    """x (...) -> x * mask; cache holds the scaled mask (None when inactive)."""
    if not train or p == 0.0:
        return x, None
    if rng is None:
        raise ValueError("dropout in training needs an rng (e.g. minivit.backend.default_rng(0))")
    mask = _keep_mask(rng, x.shape, p, x.dtype)
    return x * mask, mask


def dropout_backward(dy, cache):
    """dL/dx = dy * mask (the same scaled mask)."""
    return (dy if cache is None else dy * cache), {}


def drop_path_forward(x, p, rng, train, mask=None):
    """x (B, ...) -> x * m_b / (1 - p), one m_b per sample (Huang et al. 2016). mask: this
    branch's scaled mask (B, 1, ...) drawn beforehand (drop_path_masks), else drawn here."""
    if not train or p == 0.0:
        return x, None
    mask = _path_mask(x, p, rng) if mask is None else mask
    return x * mask, mask


def _path_mask(x, p, rng):
    if rng is None:
        raise ValueError("drop-path in training needs an rng")
    return _keep_mask(rng, (x.shape[0],) + (1,) * (x.ndim - 1), p, x.dtype)


def residual_drop_path(z, x, p, rng, train, mask=None, out=None, bias=None):
    """z + drop_path(x + bias) (into out): a residual add of eq. 2-3 with stochastic depth;
    bias: the branch's last bias, when its linear layer left it out (defer_bias). Returns (the
    sum, drop_path_backward's cache: the mask or None). On CuPy one fused kernel, which makes
    no x * mask array (backward needs only the mask)."""
    xp = get_array_module(z)
    active = train and p != 0.0
    if kernels_cupy.enabled(x) and (active or bias is not None):
        out = xp.empty(x.shape, x.dtype) if out is None else out
        if not active:
            return kernels_cupy.bias_residual(x, bias, z, out), None
        mask = _path_mask(x, p, rng) if mask is None else mask
        if bias is None:
            return kernels_cupy.masked_residual(x, mask, z, out), mask
        return kernels_cupy.masked_bias_residual(x, bias, mask, z, out), mask
    x, mask = drop_path_forward(x if bias is None else x + bias, p, rng, train, mask)
    return xp.add(z, x, out=out), mask


def drop_path_masks(rng, batch, rates, dtype):
    """Every block's two drop-path masks (attention branch, MLP branch) from ONE draw, as
    _keep_mask would make them: [(B, 1, 1) pair or None where the rate is 0] per block. (On a
    GPU each draw is a kernel launch: one here instead of five per branch.)"""
    live = [i for i, p in enumerate(rates) if p > 0]
    if not live:
        return [None] * len(rates)
    if rng is None:
        raise ValueError("drop-path in training needs an rng")
    draw = _draw_dtype(dtype)
    u = rng.random((len(live), 2, batch), dtype=draw)
    xp = get_array_module(u)

    def make():                                       # one host-to-device copy, ever
        r = xp.asarray([rates[i] for i in live], dtype=draw)[:, None, None]
        return r, (1.0 / (1.0 - r)).astype(dtype)
    r, scale = constant(("drop_path", xp, tuple(rates[i] for i in live), str(dtype)), make)
    masks = (u >= r) * scale                                              # (L', 2, B)
    out = [None] * len(rates)
    for j, i in enumerate(live):
        out[i] = (masks[j, 0].reshape(batch, 1, 1), masks[j, 1].reshape(batch, 1, 1))
    return out


drop_path_backward = dropout_backward
