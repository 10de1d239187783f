"""LayerNorm over the feature axis D (eps 1e-6 as the reference ViT).

    y = gamma * xhat + beta,   xhat = (x - mu) / sqrt(var + eps),   mu, var over the last axis.
Rows are independent, so the work runs over row chunks that stay in cache, spread over the
cores (minivit.parallel): each pass over a chunk reads L2, not main memory.
"""
from .. import kernels_cupy
from ..backend import get_array_module
from ..parallel import col_sums, for_rows, row_sums, scratch
from .linear import rows as _rows


def layernorm_forward(x, gamma, beta, eps=1e-6, out=None, xhat_out=None):
    """x (..., D), gamma (D,), beta (D,) -> y (..., D). out/xhat_out: C-contiguous buffers."""
    xp = get_array_module(x)
    D = x.shape[-1]
    y = xp.empty(x.shape, x.dtype) if out is None else out
    xhat = xp.empty(x.shape, x.dtype) if xhat_out is None else xhat_out
    rstd = xp.empty(x.shape[:-1] + (1,), x.dtype)                     # (..., 1)
    if kernels_cupy.enabled(x) and x.flags.c_contiguous:
        kernels_cupy.layernorm_forward(x, gamma, beta, eps, y, xhat, rstd)   # one fused kernel
        return y, (xhat, gamma, rstd)
    x2, y2, h2, r2 = _rows(x), _rows(y), _rows(xhat), _rows(rstd)

    def chunk(lo, hi):
        xc, h = x2[lo:hi], h2[lo:hi]
        xp.subtract(xc, row_sums(xc, scale=1.0 / D), out=h)          # x - mu
        r = row_sums(h, h, 1.0 / D)                                   # var
        r += eps
        xp.sqrt(r, out=r)
        xp.divide(1.0, r, out=r)                                      # rstd
        h *= r
        r2[lo:hi] = r
        xp.multiply(h, gamma, out=y2[lo:hi])
        y2[lo:hi] += beta
    for_rows(chunk, x2.shape[0], D * x.itemsize, xp)
    return y, (xhat, gamma, rstd)


def layernorm_recompute(cache, beta, out=None):
    """y = xhat gamma + beta again from the cache (the next layer's weight gradient needs y)."""
    xhat, gamma, _ = cache
    xp = get_array_module(xhat)
    y = xp.multiply(xhat, gamma, out=out)
    y += beta
    return y


def layernorm_backward(dy, cache, out=None):
    """Three terms (g = dy * gamma, means over D):  dx = rstd (g - mean(g) - xhat mean(g xhat)).

    dgamma = sum(dy * xhat), dbeta = sum(dy), summed over every axis but the last.
    """
    xhat, gamma, rstd = cache
    xp = get_array_module(dy)
    D = xhat.shape[-1]
    dx = xp.empty(xhat.shape, xp.result_type(dy, xhat)) if out is None else out
    d2, h2, r2, o2 = _rows(dy), _rows(xhat), _rows(rstd), _rows(dx)
    if kernels_cupy.enabled(dy) and dy.flags.c_contiguous:
        kernels_cupy.layernorm_backward_dx(dy, xhat, gamma, rstd, dx)
        return dx, {"weight": col_sums(d2 * h2), "bias": col_sums(d2)}
    partial = []                                                      # (dgamma, dbeta) per chunk

    def chunk(lo, hi):
        d, h = d2[lo:hi], h2[lo:hi]
        g = xp.multiply(d, gamma, out=scratch(0, d.shape, xp.result_type(d, gamma), xp))
        t = xp.multiply(d, h, out=scratch(1, d.shape, xp.result_type(d, h), xp))
        partial.append((lo, col_sums(t), col_sums(d)))
        mean_gx = row_sums(g, h, 1.0 / D)
        mean_g = row_sums(g, scale=1.0 / D)
        xp.multiply(h, mean_gx, out=t)
        g -= t
        g -= mean_g
        xp.multiply(g, r2[lo:hi], out=o2[lo:hi])
    for_rows(chunk, h2.shape[0], D * xhat.itemsize, xp)
    partial.sort(key=lambda p: p[0])          # in row order, not the threads' finishing order:
    grads = {"weight": sum(p[1] for p in partial),      # the same sums run after run
             "bias": sum(p[2] for p in partial)}
    return dx, grads
