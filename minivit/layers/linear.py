"""Affine layer y = x W + b, W stored (in, out) as in the paper (E, U_qkv, U_msa).

Leading axes are flattened first, so (B, T, in) @ (in, out) is one GEMM of B*T rows rather
than B small ones. `out=` lets the caller choose where y (or dx) lives (a workspace buffer).
The products go through minivit.parallel.matmul: xp.matmul, cut over minivit's threads where
minivit owns the cores (minivit.blas).
"""
from ..backend import get_array_module
from ..parallel import col_sums, matmul


def rows(a):
    """(..., n) -> (prod(...), n), a view when a is C-contiguous."""
    return a.reshape(-1, a.shape[-1])


def out_rows(out):
    """rows(out) for an output buffer, which must be a C-contiguous array (so rows is a view)."""
    if not out.flags.c_contiguous:
        raise ValueError("out= buffers must be C-contiguous")
    return rows(out)


def linear_forward(x, W, b=None, out=None, defer_bias=False):
    """x (..., in), W (in, out), b (out,) -> y (..., out).
    defer_bias: return x W without b; the caller adds b in its own next pass over y (GELU's)."""
    xp = get_array_module(x, W)
    shape = x.shape[:-1] + (W.shape[1],)
    if out is None:
        out = xp.empty(shape, dtype=xp.result_type(x, W))
    matmul(rows(x), W, out_rows(out))
    if b is not None and not defer_bias:
        out += b
    return out, (x, W, b is not None)


def linear_backward(dy, cache, need_dx=True, dx_out=None):
    """dL/dx = dy W^T;  dL/dW = x^T dy (summed over all leading axes);  dL/db = sum dy.

    need_dx=False skips dx (returned as None), e.g. for the images."""
    x, W, has_bias = cache
    xp = get_array_module(dy, W)
    dy2, x2 = rows(dy), rows(x)
    grads = {"weight": matmul(x2.T, dy2)}                             # dW = x^T dy (in, out)
    if has_bias:
        grads["bias"] = col_sums(dy2)                                # db = sum of dy's rows
    if not need_dx:
        return None, grads
    if dx_out is None:
        dx_out = xp.empty(dy.shape[:-1] + (W.shape[0],), dtype=xp.result_type(dy, W))
    matmul(dy2, W.T, out_rows(dx_out))
    return dx_out, grads
