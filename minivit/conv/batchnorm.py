"""BatchNorm2d with PyTorch's semantics: per channel, statistics over (B, H, W).

    training:  mu, var = mean and biased variance of x over (B, H, W)       (M = B H W values)
               running_mean <- (1 - m) running_mean + m mu
               running_var  <- (1 - m) running_var  + m var M / (M - 1)      (unbiased)
    eval:      mu, var = running_mean, running_var
    y = gamma xhat + beta,   xhat = (x - mu) / sqrt(var + eps),   m = 0.1, eps = 1e-5

Running statistics are buffers, not parameters: the optimiser never sees them. Models keep
them in a separate `state` dict (name -> array, e.g. "stem.0.bn.running_mean") beside
`params`; in training this forward updates the two arrays IN PLACE (as PyTorch's modules
update their buffers), eval reads them, and checkpoints save `state` next to `params`.
(PyTorch's num_batches_tracked is not kept: it only matters when momentum is None.)

Backward in training (g = dy gamma; means over the M values of a channel) is LayerNorm's
three-term formula on different axes, because mu and var depend on x:
    dx = rstd (g - mean(g) - xhat mean(g xhat));    in eval mu, var are constants: dx = rstd g.
dgamma = sum dy xhat, dbeta = sum dy over (B, H, W).
"""
from ..backend import get_array_module

AXES = (0, 2, 3)


def _c(v):
    """(C,) -> (C, 1, 1), to broadcast against (B, C, H, W)."""
    return v[:, None, None]


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, train, momentum=0.1,
                        eps=1e-5):
    """x (B, C, H, W), gamma/beta/running_* (C,) -> y (B, C, H, W); updates running_* if train."""
    xp = get_array_module(x)
    if x.ndim != 4 or gamma.shape != (x.shape[1],):
        raise ValueError(f"batchnorm2d: gamma {gamma.shape} does not fit input {x.shape}")
    if train:
        M = x.shape[0] * x.shape[2] * x.shape[3]
        if M < 2:
            raise ValueError(f"batchnorm2d in training needs more than 1 value per channel, "
                             f"got input {x.shape}")
        mu = x.mean(axis=AXES)
        xc = x - _c(mu)
        var = (xc * xc).mean(axis=AXES)
        running_mean *= 1.0 - momentum
        running_mean += momentum * mu
        running_var *= 1.0 - momentum
        running_var += (momentum * M / (M - 1)) * var
    else:
        xc = x - _c(running_mean)
        var = running_var
    rstd = 1.0 / xp.sqrt(var + eps)                                   # (C,)
    xhat = xc * _c(rstd)
    return xhat * _c(gamma) + _c(beta), (xhat, gamma, rstd, train)


def batchnorm2d_backward(dy, cache):
    xhat, gamma, rstd, train = cache
    g = dy * _c(gamma)
    if train:
        g = g - g.mean(axis=AXES, keepdims=True) - xhat * (g * xhat).mean(axis=AXES, keepdims=True)
    grads = {"weight": (dy * xhat).sum(axis=AXES), "bias": dy.sum(axis=AXES)}
    return g * _c(rstd), grads
