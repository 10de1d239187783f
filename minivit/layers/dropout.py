"""Dropout and stochastic depth (drop-path), with an explicit seeded generator.

Inverted dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p) per element; identity when not
training or p == 0. Drop-path draws one m per sample and scales a whole residual branch.
"""


def _keep_mask(rng, shape, p, dtype):
    draw = dtype if dtype in ("float32", "float64") else "float32"      # no float16 generator
    return (rng.random(shape, dtype=draw) >= p).astype(dtype) * (1.0 / (1.0 - p))


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


def drop_path_forward(x, p, rng, train):
    """x (B, ...) -> x * m_b / (1 - p), one m_b per sample (Huang et al. 2016)."""
    if not train or p == 0.0:
        return x, None
    if rng is None:
        raise ValueError("drop-path in training needs an rng")
    mask = _keep_mask(rng, (x.shape[0],) + (1,) * (x.ndim - 1), p, x.dtype)
    return x * mask, mask


drop_path_backward = dropout_backward
