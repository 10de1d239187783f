"""LayerNorm over the feature axis D (eps 1e-6 as the reference ViT).

    y = gamma * xhat + beta,   xhat = (x - mu) / sqrt(var + eps),   mu, var over the last axis.
Rows are independent, so the work runs over row chunks that stay in cache, spread over the
cores (minivit.parallel): each pass over a chunk reads L2, not main memory.

With gamma = beta = None the layer stops at xhat: the encoder block folds gamma and beta into
the linear layer LN feeds (fold_into_linear), LN(x) W + b = xhat (diag(gamma) W) + (beta W + b),
so the two passes of the affine, and in backward dy * gamma and the sums for dgamma and dbeta,
become small products over W (D x out) instead of passes over every token.
"""
from .. import kernels_cupy
from ..backend import get_array_module
from ..parallel import col_sums, for_rows, row_sums, scratch
from .linear import rows as _rows


def layernorm_forward(x, gamma, beta, eps=1e-6, out=None, xhat_out=None):
    """x (..., D), gamma (D,), beta (D,) -> y (..., D). out/xhat_out: C-contiguous buffers.
    gamma = beta = None: no affine, y is xhat itself (out unused)."""
    xp = get_array_module(x)
    D = x.shape[-1]
    affine = gamma is not None
    if affine != (beta is not None):
        raise ValueError("gamma and beta: both arrays, or both None (no affine)")
    xhat = xp.empty(x.shape, x.dtype) if xhat_out is None else xhat_out
    y = xhat if not affine else xp.empty(x.shape, x.dtype) if out is None else out
    rstd = xp.empty(x.shape[:-1] + (1,), x.dtype)                     # (..., 1)
    if kernels_cupy.enabled(x) and x.flags.c_contiguous:
        g, b = (gamma, beta) if affine else kernels_cupy.unit_affine(D, x.dtype)
        kernels_cupy.layernorm_forward(x, g, b, eps, y, xhat, rstd)   # one fused kernel
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
        if affine:
            xp.multiply(h, gamma, out=y2[lo:hi])
            y2[lo:hi] += beta
    for_rows(chunk, x2.shape[0], D * x.itemsize, xp)
    return y, (xhat, gamma, rstd)


def fold_into_linear(gamma, beta, W, b):
    """LN(x) W + b = (xhat gamma + beta) W + b = xhat W' + b' with W' = diag(gamma) W (D, out),
    b' = beta W + b (out,): the affine of a LayerNorm, moved into the linear layer it feeds."""
    return gamma[:, None] * W, beta @ W + b


def unfold_grads(gamma, beta, W, dW_folded, db_folded):
    """Gradients of (gamma, beta, W, b) from those of the folded W', b' (fold_into_linear):
    dW = diag(gamma) dW' + beta^T db',  db = db',  dgamma = rowsum(W * dW'),  dbeta = W db'."""
    xp = get_array_module(W)
    dW = gamma[:, None] * dW_folded
    dW += beta[:, None] * db_folded
    return ({"weight": dW, "bias": db_folded},
            {"weight": xp.einsum("ij,ij->i", W, dW_folded), "bias": W @ db_folded})


def layernorm_backward(dy, cache, out=None, residual=None):
    """Three terms (g = dy * gamma, means over D):  dx = rstd (g - mean(g) - xhat mean(g xhat)).

    dgamma = sum(dy * xhat), dbeta = sum(dy), summed over every axis but the last.
    Without the affine (gamma None), dy is d xhat: g = dy and the grads are {}.
    residual (dx's shape): added to dx in the same pass, the gradient a residual connection
    carries straight through (eq. 2-3); out must not be residual."""
    xhat, gamma, rstd = cache
    xp = get_array_module(dy)
    D = xhat.shape[-1]
    affine = gamma is not None
    dx = xp.empty(xhat.shape, xp.result_type(dy, xhat)) if out is None else out
    if residual is not None and (residual.shape != dx.shape or
                                 xp.may_share_memory(residual, dx)):
        raise ValueError(f"residual {residual.shape} must have dx's shape {dx.shape} and not "
                         "be out")
    d2, h2, r2, o2 = _rows(dy), _rows(xhat), _rows(rstd), _rows(dx)
    res2 = None if residual is None else _rows(residual)
    if kernels_cupy.enabled(dy) and dy.flags.c_contiguous and \
            (residual is None or residual.flags.c_contiguous):
        g = gamma if affine else kernels_cupy.unit_affine(D, xhat.dtype)[0]
        dgb = xp.empty((h2.shape[0], 2 * D), dx.dtype) if affine else None   # [dy xhat | dy]
        kernels_cupy.layernorm_backward_dx(dy, xhat, g, rstd, dx, dgb, residual)
        if not affine:
            return dx, {}
        s = col_sums(dgb)                                             # [dgamma | dbeta], one GEMV
        return dx, {"weight": s[:D], "bias": s[D:]}
    partial = []                                                      # (dgamma, dbeta) per chunk

    def chunk(lo, hi):
        d, h, o = d2[lo:hi], h2[lo:hi], o2[lo:hi]
        t = scratch(1, d.shape, xp.result_type(d, h), xp)
        g = d                                                         # d xhat
        if affine:
            g = xp.multiply(d, gamma, out=scratch(0, d.shape, xp.result_type(d, gamma), xp))
            partial.append((lo, col_sums(xp.multiply(d, h, out=t)), col_sums(d)))
        mean_gx = row_sums(g, h, 1.0 / D)
        mean_g = row_sums(g, scale=1.0 / D)
        xp.multiply(h, mean_gx, out=t)
        xp.subtract(g, t, out=o)
        o -= mean_g
        o *= r2[lo:hi]
        if residual is not None:
            o += res2[lo:hi]
    for_rows(chunk, h2.shape[0], D * xhat.itemsize, xp)
    if not affine:
        return dx, {}
    partial.sort(key=lambda p: p[0])          # in row order, not the threads' finishing order:
    grads = {"weight": sum(p[1] for p in partial),      # the same sums run after run
             "bias": sum(p[2] for p in partial)}
    return dx, grads
