"""Depthwise 2-D convolution (groups = C): each channel convolved with its own k x k filter.

    y[b, c, r, q] = sum_{i, j} w[c, 0, i, j] xpad[b, c, s r + i, s q + j] + b[c]
Vectorised over batch and channels; the only loop is over the k^2 kernel taps, each one a
strided slice of the padded input times a per-channel scalar. Backward, per tap (i, j):
    dw[c, 0, i, j] = sum_{b, r, q} dy * xpad[tap],     dxpad[tap] += dy * w[c, 0, i, j],
so overlapping taps add up, as in col2im. Weight layout (C, 1, k, k) as PyTorch's.
"""
from ..backend import get_array_module
from .conv2d import conv_output_size, pad2d, window


def depthwise_forward(x, weight, bias=None, stride=1, padding=0):
    """x (B, C, H, W), weight (C, 1, k, k), bias (C,) -> (B, C, Ho, Wo)."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    k = weight.shape[-1]
    if weight.shape != (C, 1, k, k):
        raise ValueError(f"depthwise: weight {tuple(weight.shape)} does not fit input {x.shape}")
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    xpad = pad2d(x, padding)
    y = xp.zeros((B, C, Ho, Wo), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            y += xpad[:, :, window(i, stride, Ho), window(j, stride, Wo)] * weight[:, 0, i, j,
                                                                                 None, None]
    if bias is not None:
        y += bias[:, None, None]
    return y, (xpad, weight, bias is not None, stride, padding, x.shape)


def depthwise_backward(dy, cache):
    xpad, weight, has_bias, stride, padding, (B, C, H, W) = cache
    xp = get_array_module(dy)
    k = weight.shape[-1]
    Ho, Wo = dy.shape[2:]
    dxpad = xp.zeros_like(xpad)
    dw = xp.empty_like(weight)
    for i in range(k):
        for j in range(k):
            rows, cols = window(i, stride, Ho), window(j, stride, Wo)
            dw[:, 0, i, j] = (dy * xpad[:, :, rows, cols]).sum(axis=(0, 2, 3))
            dxpad[:, :, rows, cols] += dy * weight[:, 0, i, j, None, None]
    grads = {"weight": dw}
    if has_bias:
        grads["bias"] = dy.sum(axis=(0, 2, 3))
    return dxpad[:, :, padding:padding + H, padding:padding + W], grads
