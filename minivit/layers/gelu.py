"""GELU(x) = x Phi(x), Phi the standard normal CDF (Hendrycks & Gimpel 2016).

exact (default, as the paper and timm):  Phi(x) = (1 + erf(x / sqrt 2)) / 2
tanh (the official JAX/Flax code):        Phi(x) ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2
"""
import math

from ..backend import erf, get_array_module

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_C = 0.044715


def gelu_forward(x, approximate="none"):
    """x (...) -> GELU(x) (...); approximate "none" (erf) or "tanh"."""
    xp = get_array_module(x)
    if approximate == "none":
        cdf = 0.5 * (1.0 + erf(x * _SQRT_HALF))
    elif approximate == "tanh":
        cdf = 0.5 * (1.0 + xp.tanh(_SQRT_2_OVER_PI * (x + _C * x * x * x)))
    else:
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return x * cdf, (x, cdf, approximate)


def gelu_backward(dy, cache):
    """exact:  GELU'(x) = Phi(x) + x phi(x),  phi(x) = exp(-x^2/2) / sqrt(2 pi).
    tanh:   GELU'(x) = Phi + x/2 (1 - t^2) sqrt(2/pi) (1 + 3c x^2),  t = 2 Phi - 1."""
    x, cdf, approximate = cache
    xp = get_array_module(x)
    if approximate == "none":
        dgelu = cdf + x * (_INV_SQRT_2PI * xp.exp(-0.5 * x * x))
    else:
        t = 2.0 * cdf - 1.0
        dgelu = cdf + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * _C * x * x)
    return dy * dgelu, {}
