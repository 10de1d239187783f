"""Affine layer y = x W + b, W stored (in, out) as in the paper (E, U_qkv, U_msa)."""


def linear_forward(x, W, b=None):
    """x (..., in), W (in, out), b (out,) -> y (..., out)."""
    y = x @ W
    if b is not None:
        y += b
    return y, (x, W, b is not None)


def linear_backward(dy, cache):
    """dL/dx = dy W^T;  dL/dW = x^T dy (summed over all leading axes);  dL/db = sum dy."""
    x, W, has_bias = cache
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    grads = {"weight": x2.T @ dy2}
    if has_bias:
        grads["bias"] = dy2.sum(axis=0)
    return dy @ W.T, grads
