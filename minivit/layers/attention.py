"""Multi-head self-attention (MSA), all heads in one batched operation.

    [q, k, v] = z U_qkv,                U_qkv in R^{D x 3D}, columns [Q | K | V]   (eq. 5)
    A = softmax(q k^T / sqrt(D_h) + bias),  A in R^{T x T} per head             (eq. 6)
    SA(z) = A v;  MSA(z) = [SA_1(z); ...; SA_k(z)] U_msa,  U_msa in R^{D x D}   (eq. 7-8)
Head h uses columns h*Dh:(h+1)*Dh of each of Q, K and V. `bias` is an optional additive term
on the scores, broadcastable to (B, heads, T, T) (masks, learned position biases).
"""
import math

from .. import kernels_cupy
from ..backend import get_array_module
from ..parallel import bmm, for_rows, row_max, row_sums
from ..workspace import buffer
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward
from .linear import rows as _rows


def softmax_forward(s, scale=1.0, out=None):
    """Stable softmax of scale * s over the last axis: exp(scale (s - max s)) / sum(...)
    (scale > 0). Row chunks in cache, over the cores; out may be s itself (in place)."""
    xp = get_array_module(s)
    out = xp.empty(s.shape, s.dtype) if out is None else out
    if kernels_cupy.enabled(s) and s.flags.c_contiguous and out.flags.c_contiguous:
        return kernels_cupy.softmax_forward(s, scale, out)            # one fused kernel
    s2, o2 = _rows(s), _rows(out)

    def chunk(lo, hi):
        o = o2[lo:hi]
        xp.subtract(s2[lo:hi], row_max(s2[lo:hi]), out=o)
        if scale != 1.0:
            o *= scale
        xp.exp(o, out=o)
        o *= 1.0 / row_sums(o)
    for_rows(chunk, s2.shape[0], s2.shape[1] * s.itemsize, xp)
    return out


def softmax_backward(dA, A, scale=1.0, out=None):
    """Jacobian-vector product: dS = A * (dA - sum_j dA_j A_j)  (diag(A) - A A^T applied to dA),
    times `scale` (the chain rule through scale * s). out may be dA itself."""
    xp = get_array_module(dA)
    out = xp.empty(dA.shape, xp.result_type(dA, A)) if out is None else out
    if kernels_cupy.enabled(dA) and all(a.flags.c_contiguous for a in (dA, A, out)):
        return kernels_cupy.softmax_backward(dA, A, scale, out)
    d2, a2, o2 = _rows(dA), _rows(A), _rows(out)

    def chunk(lo, hi):
        d, a, o = d2[lo:hi], a2[lo:hi], o2[lo:hi]
        dot = row_sums(d, a)
        xp.subtract(d, dot, out=o)
        o *= a
        if scale != 1.0:
            o *= scale
    for_rows(chunk, d2.shape[0], d2.shape[1] * dA.itemsize, xp)
    return out


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape` (the inverse of broadcasting), for the gradient of `bias`."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def split_heads(qkv, heads):
    """(B, T, 3D) -> q, k, v each (B, heads, T, Dh): strided views, no copy."""
    B, T, D3 = qkv.shape
    x = qkv.reshape(B, T, 3, heads, D3 // (3 * heads)).transpose(2, 0, 3, 1, 4)
    return x[0], x[1], x[2]


def heads_for(qkv, heads, out=None, bias=None):
    """q, k, v (B, heads, T, Dh) of qkv (B, T, 3D) (+ U_qkv's bias (3D,), CuPy only). NumPy:
    split_heads' strided views. CuPy: one copy into `out` (3, B, heads, T, Dh), so each is
    C-contiguous, the bias added on the way. CuPy's batched matmul copies every operand that is
    not (cupy/_core/_routines_linalg.pyx): q feeds q k^T and dS^T q, k feeds dS k, v feeds A v,
    four copies of strided views that this one replaces."""
    xp = get_array_module(qkv)
    if xp.__name__ != "cupy":
        if bias is not None:
            raise ValueError("heads_for adds the bias on CuPy only (NumPy: linear_forward's)")
        return split_heads(qkv, heads)
    B, T, D3 = qkv.shape
    Dh = D3 // (3 * heads)
    out = xp.empty((3, B, heads, T, Dh), qkv.dtype) if out is None else out
    view = qkv.reshape(B, T, 3, heads, Dh).transpose(2, 0, 3, 1, 4)
    if bias is None:
        out[...] = view
    else:
        xp.add(view, bias.reshape(3, 1, heads, 1, Dh), out=out)       # one kernel, strided in
    return out[0], out[1], out[2]


def head_view(x, heads):
    """(B, T, D) -> (B, heads, T, Dh), a view: the heads side by side as in [SA_1; ...; SA_k]."""
    B, T, D = x.shape
    return x.reshape(B, T, heads, D // heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, heads, T, Dh) -> (B, T, heads*Dh), heads side by side as in [SA_1; ...; SA_k]."""
    B, H, T, Dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * Dh)


def attention_forward(x, p, heads, bias=None, attn_dropout=0.0, rng=None, train=False, ws=None,
                      queries=None, defer_bias=False):
    """x (B, T, D) -> MSA(x) (B, Tq, D): Tq = T, or the first `queries` tokens only.

    p holds qkv.weight (D, 3D), qkv.bias (3D,), proj.weight (D, D), proj.bias (D,).
    ws: an optional minivit.workspace.Workspace (scoped to this block) for the buffers.
    queries: compute the output for tokens 0..queries-1 alone (their query rows of A); keys and
    values still come from all T tokens. ViT's last block needs only the class token (eq. 4).
    defer_bias: the output without U_msa's bias, which the caller adds in its residual pass.

    The cache keeps the attention probabilities as cache["attn"] (B, heads, Tq, T).
    """
    xp = get_array_module(x)
    B, T, D = x.shape
    Tq = T if queries is None else queries
    if not 1 <= Tq <= T:
        raise ValueError(f"queries must be in 1..{T} (the tokens), got {queries}")
    if Tq != T and bias is not None:
        raise ValueError("queries= and an attention bias cannot be combined")
    dt = xp.result_type(x, p["qkv.weight"])
    on_cupy = xp.__name__ == "cupy"                 # q, k, v copied out of qkv (heads_for)
    qkv, c_qkv = linear_forward(x, p["qkv.weight"], p["qkv.bias"], defer_bias=on_cupy,
                                out=buffer(ws, "qkv", (B, T, 3 * D), dt, xp, shared=on_cupy))
    q, k, v = heads_for(qkv, heads, buffer(ws, "heads", (3, B, heads, T, D // heads), dt, xp),
                        p["qkv.bias"]) if on_cupy else heads_for(qkv, heads)   # (B, H, T, Dh)
    q = q[:, :, :Tq]                 # (B, H, Tq, Dh); with Tq < T the other q rows go unused
    scale = 1.0 / math.sqrt(q.shape[-1])
    A = buffer(ws, "attn", (B, heads, Tq, T), dt, xp)
    bmm(q, k.transpose(0, 1, 3, 2), out=A)                            # q k^T  (B, H, Tq, T)
    if bias is not None:
        A *= scale
        A += bias
        softmax_forward(A, out=A)
    else:
        softmax_forward(A, scale, out=A)                              # softmax(q k^T / sqrt Dh)
    A_drop, c_drop = dropout_forward(A, attn_dropout, rng, train)
    ctx = buffer(ws, "ctx", (B, Tq, D), dt, xp)
    bmm(A_drop, v, out=head_view(ctx, heads))                         # [SA_1; ...] (B, Tq, D)
    out, c_proj = linear_forward(ctx, p["proj.weight"], p["proj.bias"], defer_bias=defer_bias,
                                 out=buffer(ws, "attn.out", (B, Tq, D), dt, xp, shared=True))
    cache = {"qkv": c_qkv, "q": q, "k": k, "v": v, "attn": A, "drop": c_drop,
             "A_drop": A_drop, "proj": c_proj, "scale": scale, "heads": heads,
             "bias_shape": None if bias is None else bias.shape}
    return out, cache


def attention_backward(dout, cache, ws=None):
    """Reverse of the forward. Returns dx and grads for the four weights (plus "bias" if used).

    d ctx -> dA = d(A v) v^T, dv = A^T d(A v);  dS = softmax'(dA);
    dq = dS k * scale,  dk = dS^T q * scale;  [dq | dk | dv] -> U_qkv backward.
    With queries=Tq < T the unused query rows get dq = 0.
    """
    xp = get_array_module(dout)
    q, k, v, A = cache["q"], cache["k"], cache["v"], cache["attn"]
    B, H, Tq, Dh = q.shape
    T = k.shape[2]
    dt = A.dtype
    dctx, g_proj = linear_backward(dout, cache["proj"],
                                   dx_out=buffer(ws, "dctx", (B, Tq, H * Dh), dt, xp, True))
    dctx = head_view(dctx, H)                                         # (B, H, Tq, Dh)
    dqkv = buffer(ws, "dqkv", (B, T, 3 * H * Dh), dt, xp, shared=True)
    on_cupy = xp.__name__ == "cupy"
    if on_cupy:        # contiguous operands and outputs (heads_for); [dq; dk; dv] go into
        if not dctx.flags.c_contiguous:                               # dqkv at the end
            dctx_h = buffer(ws, "dctx.heads", dctx.shape, dt, xp, shared=True)
            dctx_h[...] = dctx
            dctx = dctx_h
        dheads = buffer(ws, "dheads", (3, B, H, T, Dh), dt, xp, shared=True)
        dq, dk, dv = dheads[0], dheads[1], dheads[2]
    else:
        dq, dk, dv = split_heads(dqkv, H)                             # views into dqkv
    if Tq < T:
        dq[:, :, Tq:] = 0                                             # rows that made no output
        dq = dq[:, :, :Tq]
    dA_drop = bmm(dctx, v.transpose(0, 1, 3, 2),
                  out=buffer(ws, "dA", A.shape, dt, xp, shared=True))  # (B, H, Tq, T)
    bmm(cache["A_drop"].transpose(0, 1, 3, 2), dctx, out=dv)
    dA, _ = dropout_backward(dA_drop, cache["drop"])
    grads = {}
    if cache["bias_shape"] is not None:
        dS = softmax_backward(dA, A, out=dA)                          # d(scores incl. bias)
        g = unbroadcast(dS, cache["bias_shape"])
        grads["bias"] = g.copy() if g is dS else g
        dS *= cache["scale"]
    else:
        dS = softmax_backward(dA, A, cache["scale"], out=dA)          # d(q k^T)
    bmm(dS, k, out=dq)
    bmm(dS.transpose(0, 1, 3, 2), q, out=dk)
    if on_cupy:                                                       # [dq | dk | dv] (B, T, 3D)
        dqkv.reshape(B, T, 3, H, Dh)[...] = dheads.transpose(1, 3, 0, 2, 4)
    dx, g_qkv = linear_backward(dqkv, cache["qkv"],
                                dx_out=buffer(ws, "attn.dx", (B, T, H * Dh), dt, xp, True))
    grads.update({"qkv.weight": g_qkv["weight"], "qkv.bias": g_qkv["bias"],
                  "proj.weight": g_proj["weight"], "proj.bias": g_proj["bias"]})
    return dx, grads
