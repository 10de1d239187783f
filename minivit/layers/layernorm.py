"""LayerNorm over the feature axis D (eps 1e-6 as the reference ViT).

    y = gamma * xhat + beta,   xhat = (x - mu) / sqrt(var + eps),   mu, var over the last axis.
"""
from ..backend import get_array_module


def layernorm_forward(x, gamma, beta, eps=1e-6):
    """x (..., D), gamma (D,), beta (D,) -> y (..., D)."""
    xp = get_array_module(x)
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    rstd = 1.0 / xp.sqrt(var + eps)                                   # (..., 1)
    xhat = xc * rstd
    y = xhat * gamma + beta
    return y, (xhat, gamma, rstd)


def layernorm_backward(dy, cache):
    """Three terms (g = dy * gamma, means over D):  dx = rstd (g - mean(g) - xhat mean(g xhat)).

    dgamma = sum(dy * xhat), dbeta = sum(dy), summed over every axis but the last.
    """
    xhat, gamma, rstd = cache
    D = xhat.shape[-1]
    g = dy * gamma
    mean_g = g.mean(axis=-1, keepdims=True)
    mean_gx = (g * xhat).mean(axis=-1, keepdims=True)
    dx = rstd * (g - mean_g - xhat * mean_gx)
    dy2 = dy.reshape(-1, D)
    grads = {"weight": (dy2 * xhat.reshape(-1, D)).sum(axis=0), "bias": dy2.sum(axis=0)}
    return dx, grads
