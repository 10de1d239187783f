"""2-D convolution by im2col: every k x k window becomes one row, the convolution one matmul.

    y[b, o, r, c] = sum_{ch, i, j} W[o, ch, i, j] xpad[b, ch, s r + i, s c + j] + b[o]
im2col gathers xpad's windows into cols (B, Ho Wo, C k k), flattened in (ch, i, j) order as
W.reshape(C_out, -1), so y = cols W2 + b with W2 = W.reshape(C_out, -1).T (C k k, C_out): the
linear layer of minivit.layers.linear, one row per output pixel. Backward is that linear's
backward, then col2im: each window's gradient is scattered back onto the pixels it came from,
summing where windows overlap (k > s). When k == s and there is no padding the windows tile
the image exactly, im2col is a pure reshape (minivit's patchify) and col2im its inverse.
Weights use PyTorch's layout (C_out, C_in, k, k); only groups=1 here (see depthwise.py).
"""
from ..backend import get_array_module
from ..layers.linear import linear_backward, linear_forward
from ..layers.patch import patchify, unpatchify


def flat_linear_forward(x, W, b=None):
    """minivit's linear layer on x (..., in) flattened to (rows, in): one BLAS matrix product,
    where NumPy's matmul on a 3-D x runs one small product per leading index (3x slower for
    the (B, N, C) token arrays of the conv models)."""
    y, c = linear_forward(x.reshape(-1, x.shape[-1]), W, b)
    return y.reshape(*x.shape[:-1], W.shape[1]), (c, x.shape)


def flat_linear_backward(dy, cache):
    c, x_shape = cache
    dx, grads = linear_backward(dy.reshape(-1, dy.shape[-1]), c)
    return dx.reshape(x_shape), grads


def conv_output_size(n, k, stride, padding):
    out = (n + 2 * padding - k) // stride + 1
    if out < 1:
        raise ValueError(f"kernel {k} with padding {padding} does not fit an input of size {n}")
    return out


def window(offset, stride, count):
    """The slice offset, offset + s, ..., offset + s (count - 1): one kernel tap's pixels."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def pad2d(x, padding):
    xp = get_array_module(x)
    if not padding:
        return x
    return xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def im2col(x, k, stride, padding):
    """(B, C, H, W) -> cols (B, Ho Wo, C k k); a loop over the k^2 kernel taps only."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    xpad = pad2d(x, padding)
    cols = xp.empty((B, C, k, k, Ho, Wo), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xpad[:, :, window(i, stride, Ho), window(j, stride, Wo)]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(B, Ho * Wo, C * k * k)


def col2im(dcols, x_shape, k, stride, padding):
    """Adjoint of im2col: (B, Ho Wo, C k k) -> (B, C, H, W), overlapping windows summed."""
    xp = get_array_module(dcols)
    B, C, H, W = x_shape
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    d = dcols.reshape(B, Ho, Wo, C, k, k).transpose(0, 3, 4, 5, 1, 2)   # (B, C, k, k, Ho, Wo)
    dxpad = xp.zeros((B, C, H + 2 * padding, W + 2 * padding), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxpad[:, :, window(i, stride, Ho), window(j, stride, Wo)] += d[:, :, i, j]
    return dxpad[:, :, padding:padding + H, padding:padding + W]


def is_patchify(x_shape, k, stride, padding):
    """True when the windows tile the input exactly: im2col is then a reshape."""
    return k == stride and padding == 0 and x_shape[2] % k == 0 and x_shape[3] % k == 0


def tokens_to_map(t, H, W):
    """(B, H W, C) -> (B, C, H, W)."""
    B, N, C = t.shape
    return t.transpose(0, 2, 1).reshape(B, C, H, W)


def map_to_tokens(m):
    """(B, C, H, W) -> (B, H W, C), C-contiguous: NumPy's matmul only calls BLAS on arrays whose
    rows are contiguous, and a transposed view would take its slow loop (seconds, not ms)."""
    xp = get_array_module(m)
    B, C, H, W = m.shape
    return xp.ascontiguousarray(m.reshape(B, C, H * W).transpose(0, 2, 1))


def conv2d_forward(x, weight, bias=None, stride=1, padding=0):
    """x (B, C_in, H, W), weight (C_out, C_in, k, k), bias (C_out,) -> (B, C_out, Ho, Wo)."""
    B, C, H, W = x.shape
    C_out, C_in, k, k2 = weight.shape
    if C_in != C or k != k2:
        raise ValueError(f"conv2d: weight {tuple(weight.shape)} does not fit input {x.shape}")
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    fast = is_patchify(x.shape, k, stride, padding)
    cols = patchify(x, k) if fast else im2col(x, k, stride, padding)   # (B, Ho Wo, C k k)
    y, c_lin = flat_linear_forward(cols, weight.reshape(C_out, -1).T, bias)  # (B, Ho Wo, C_out)
    return tokens_to_map(y, Ho, Wo), (c_lin, x.shape, weight.shape, stride, padding, fast)


def conv2d_backward(dy, cache):
    """dW2 = cols^T dy, dcols = dy W2^T (linear backward), dx = col2im(dcols)."""
    c_lin, x_shape, w_shape, stride, padding, fast = cache
    dcols, g = flat_linear_backward(map_to_tokens(dy), c_lin)
    k = w_shape[-1]
    B, C, H, W = x_shape
    dx = unpatchify(dcols, k, C, H, W) if fast else col2im(dcols, x_shape, k, stride, padding)
    grads = {"weight": g["weight"].T.reshape(w_shape)}
    if "bias" in g:
        grads["bias"] = g["bias"]
    return dx, grads
