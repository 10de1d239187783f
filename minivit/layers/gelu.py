"""GELU(x) = x Phi(x), Phi the standard normal CDF (Hendrycks & Gimpel 2016).

exact (default, as the paper and timm):  Phi(x) = (1 + erf(x / sqrt 2)) / 2
tanh (the official JAX/Flax code):        Phi(x) ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2
On NumPy in float32, exact Phi is evaluated as (1 + tanh(g(x))) / 2, g an odd polynomial of
degree 13 fitted to atanh(erf(x / sqrt 2)) (minivit.erf.normal_cdf_float32, error < 1e-7).
The work runs over row chunks that stay in cache, spread over the cores (minivit.parallel).
The cache keeps x and Phi(x); GELU(x) = x Phi(x) is one multiply away when backward needs it.
Or, with grad_out (the MLP in training, on NumPy), the forward also writes GELU'(x) while each
chunk is in cache and the cache keeps that alone: backward is then one multiply, dx = dy GELU'.
"""
import math

import numpy

from .. import kernels_cupy
from ..backend import erf, get_array_module
from ..erf import normal_cdf_float32
from ..parallel import for_rows, scratch

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_C = 0.044715


def _cdf(x, approximate, xp, out):
    """Phi(x) (exact) or its tanh approximation, for one chunk, into `out`."""
    if approximate == "none" and x.dtype == "float32" and xp is numpy:
        return normal_cdf_float32(x, out, scratch(0, x.shape, x.dtype))
    if approximate == "none":
        out[...] = erf(x * _SQRT_HALF)
    else:
        c = xp.multiply(x, x, out=out)
        c *= _C
        c += 1.0
        c *= x
        c *= _SQRT_2_OVER_PI
        xp.tanh(c, out=c)
    out *= 0.5
    out += 0.5
    return out


def _flat(a):
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def gelu_forward(x, approximate="none", out=None, cdf_out=None, bias=None, grad_out=None):
    """x (...) -> GELU(x) (...); approximate "none" (erf) or "tanh". out/cdf_out: buffers.
    bias (x.shape[-1],): GELU(x + bias), with x + bias left in x: a linear layer's bias added
    in this pass, while each chunk is in cache, not in a pass of its own over memory
    (mlp_forward).
    Cache: (x, Phi(x), approximate). With grad_out (NumPy, a C-contiguous buffer of x's
    shape): GELU'(x) written there in the same pass, and the cache is (None, None,
    approximate, GELU'(x)); cdf_out goes unused."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    xp = get_array_module(x)
    if grad_out is not None and (xp is not numpy or not grad_out.flags.c_contiguous or
                                 grad_out.shape != x.shape):
        raise ValueError("grad_out= needs NumPy and a C-contiguous buffer of x's shape")
    out = xp.empty(x.shape, x.dtype) if out is None else out
    cdf = None if grad_out is not None else xp.empty(x.shape, x.dtype) if cdf_out is None else \
        cdf_out
    if approximate == "none" and kernels_cupy.enabled(x) and grad_out is None:
        kernels_cupy.gelu_forward(x, out, cdf, bias)      # one fused kernel, x += bias in it
        return out, (x, cdf, approximate)
    if bias is not None and (xp is not numpy or not x.flags.c_contiguous):
        x += bias                            # GPU: one kernel; a strided x: chunks are copies
        bias = None
    x2, o2 = _flat(x), _flat(out)
    c2 = None if cdf is None else _flat(cdf)
    d2 = None if grad_out is None else _flat(grad_out)

    def chunk(lo, hi):
        xc = x2[lo:hi]
        if bias is not None:
            xc += bias
        cc = _cdf(xc, approximate, xp, out=scratch(1, xc.shape, xc.dtype, xp) if c2 is None
                  else c2[lo:hi])
        xp.multiply(xc, cc, out=o2[lo:hi])                            # x Phi(x)
        if d2 is not None:
            _grad(xc, cc, approximate, xp, out=d2[lo:hi])             # Phi(x) + x phi(x)
    for_rows(chunk, x2.shape[0], x2.shape[1] * x.itemsize, xp)
    if grad_out is not None:
        return out, (None, None, approximate, grad_out)
    return out, (x, cdf, approximate)


def _grad(x, cdf, approximate, xp, out):
    """GELU'(x) for one chunk, into `out`. exact: Phi(x) + x phi(x), phi(x) = exp(-x^2/2) /
    sqrt(2 pi). tanh: Phi + x/2 (1 - t^2) sqrt(2/pi) (1 + 3c x^2), t = 2 Phi - 1."""
    g = xp.multiply(x, x, out=out)
    if approximate == "none":
        g *= -0.5
        xp.exp(g, out=g)
        g *= _INV_SQRT_2PI
    else:
        t = 2.0 * cdf - 1.0
        g *= 3 * _C
        g += 1.0
        t *= t
        xp.subtract(1.0, t, out=t)
        g *= t
        g *= 0.5 * _SQRT_2_OVER_PI
    g *= x
    g += cdf
    return g


def gelu_backward(dy, cache, out=None):
    """dx = dy GELU'(x): from x and Phi as in _grad, or, for a cache of four (the forward's
    grad_out), GELU' as stored. `out` may be dy itself (overwritten in place)."""
    x, cdf, approximate = cache[:3]
    xp = get_array_module(dy)
    out = xp.empty(dy.shape, xp.result_type(dy, x if x is not None else cache[3])) \
        if out is None else out
    if len(cache) == 4:                                       # (None, None, approx, GELU')
        return xp.multiply(dy, cache[3], out=out), {}
    if approximate == "none" and kernels_cupy.enabled(x):
        return kernels_cupy.gelu_backward(dy, x, cdf, out), {}
    x2, c2, d2, o2 = _flat(x), _flat(cdf), _flat(dy), _flat(out)

    def chunk(lo, hi):
        xc = x2[lo:hi]
        g = _grad(xc, c2[lo:hi], approximate, xp, out=scratch(0, xc.shape, xc.dtype, xp))
        xp.multiply(d2[lo:hi], g, out=o2[lo:hi])
    for_rows(chunk, x2.shape[0], x2.shape[1] * x.itemsize, xp)
    return out, {}


def gelu_recompute(cache, out=None):
    """GELU(x) = x Phi(x) from a forward cache of x and Phi (what fc2's weight gradient needs)."""
    x, cdf = cache[:2]
    xp = get_array_module(x)
    return xp.multiply(x, cdf, out=out)
