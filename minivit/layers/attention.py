"""Multi-head self-attention (MSA), all heads in one batched operation.

    [q, k, v] = z U_qkv,                U_qkv in R^{D x 3D}, columns [Q | K | V]   (eq. 5)
    A = softmax(q k^T / sqrt(D_h) + bias),  A in R^{T x T} per head             (eq. 6)
    SA(z) = A v;  MSA(z) = [SA_1(z); ...; SA_k(z)] U_msa,  U_msa in R^{D x D}   (eq. 7-8)
Head h uses columns h*Dh:(h+1)*Dh of each of Q, K and V. `bias` is an optional additive term
on the scores, broadcastable to (B, heads, T, T) (masks, learned position biases).
"""
import math

from ..backend import get_array_module
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward


def softmax_forward(s):
    """Numerically stable softmax over the last axis: exp(s - max s) / sum exp(s - max s)."""
    xp = get_array_module(s)
    e = xp.exp(s - s.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def softmax_backward(dA, A):
    """Jacobian-vector product: dS = A * (dA - sum_j dA_j A_j)  (diag(A) - A A^T applied to dA)."""
    return A * (dA - (dA * A).sum(axis=-1, keepdims=True))


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape` (the inverse of broadcasting), for the gradient of `bias`."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def split_heads(qkv, heads):
    """(B, T, 3D) -> q, k, v each (B, heads, T, Dh)."""
    B, T, D3 = qkv.shape
    x = qkv.reshape(B, T, 3, heads, D3 // (3 * heads)).transpose(2, 0, 3, 1, 4)
    return x[0], x[1], x[2]


def merge_heads(x):
    """(B, heads, T, Dh) -> (B, T, heads*Dh), heads side by side as in [SA_1; ...; SA_k]."""
    B, H, T, Dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * Dh)


def attention_forward(x, p, heads, bias=None, attn_dropout=0.0, rng=None, train=False):
    """x (B, T, D) -> MSA(x) (B, T, D).

    p holds qkv.weight (D, 3D), qkv.bias (3D,), proj.weight (D, D), proj.bias (D,).

    The cache keeps the attention probabilities as cache["attn"] (B, heads, T, T).
    """
    qkv, c_qkv = linear_forward(x, p["qkv.weight"], p["qkv.bias"])   # (B, T, 3D)
    q, k, v = split_heads(qkv, heads)                                 # (B, H, T, Dh)
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = (q @ k.transpose(0, 1, 3, 2)) * scale                         # (B, H, T, T)
    if bias is not None:
        s += bias
    A = softmax_forward(s)
    A_drop, c_drop = dropout_forward(A, attn_dropout, rng, train)
    ctx = merge_heads(A_drop @ v)                                     # (B, T, D)
    out, c_proj = linear_forward(ctx, p["proj.weight"], p["proj.bias"])
    cache = {"qkv": c_qkv, "q": q, "k": k, "v": v, "attn": A, "drop": c_drop,
             "A_drop": A_drop, "proj": c_proj, "scale": scale, "heads": heads,
             "bias_shape": None if bias is None else bias.shape}
    return out, cache


def attention_backward(dout, cache):
    """Reverse of the forward. Returns dx and grads for the four weights (plus "bias" if used).

    d ctx -> dA = d(A v) v^T, dv = A^T d(A v);  dS = softmax'(dA);
    dq = dS k * scale,  dk = dS^T q * scale;  [dq | dk | dv] -> U_qkv backward.
    """
    xp = get_array_module(dout)
    q, k, v, A = cache["q"], cache["k"], cache["v"], cache["attn"]
    dctx, g_proj = linear_backward(dout, cache["proj"])               # (B, T, D)
    B, H, T, Dh = q.shape
    dctx = dctx.reshape(B, T, H, Dh).transpose(0, 2, 1, 3)            # (B, H, T, Dh)
    dA_drop = dctx @ v.transpose(0, 1, 3, 2)                          # (B, H, T, T)
    dv = cache["A_drop"].transpose(0, 1, 3, 2) @ dctx
    dA, _ = dropout_backward(dA_drop, cache["drop"])
    dS = softmax_backward(dA, A)                                      # d(scores incl. bias)
    dq = (dS @ k) * cache["scale"]
    dk = (dS.transpose(0, 1, 3, 2) @ q) * cache["scale"]
    dqkv = xp.stack([dq, dk, dv], axis=0)                             # (3, B, H, T, Dh)
    dqkv = dqkv.transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * H * Dh)    # (B, T, 3D)
    dx, g_qkv = linear_backward(dqkv, cache["qkv"])
    grads = {"qkv.weight": g_qkv["weight"], "qkv.bias": g_qkv["bias"],
             "proj.weight": g_proj["weight"], "proj.bias": g_proj["bias"]}
    if cache["bias_shape"] is not None:
        grads["bias"] = unbroadcast(dS, cache["bias_shape"])
    return dx, grads
