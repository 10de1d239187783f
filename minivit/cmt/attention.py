"""LMHSA, CMT's lightweight multi-head self-attention: queries from all N tokens, keys and
values from a k x k stride-k depthwise convolution (+ BN) of the token map (N / k^2 tokens),
and a learned relative position bias B added to the scaled scores:

    X' = BN(DWConv_{k x k, stride k}(X))                  (N / k^2 tokens; X' = X when k = 1)
    q = X W_q,  k = X' W_k,  v = X' W_v                   (split into heads, D_h = D / heads)
    A = softmax(q k^T / sqrt(D_h) + B),  B in R^{heads x N x N/k^2}
    LMHSA(X) = [A_1 v_1; ...; A_h v_h] W_proj
Gradients: as MSA, except dq and d(k, v) reach different inputs (dX from q, dX' from k and v,
then back through BN and the depthwise conv, added to dX), and dB = sum over the batch of
dS, the gradient of the scores. Follows the official Attention(sr_ratio, qk_ratio = 1) of
huawei-noah/Efficient-AI-Backbones cmt_pytorch/cmt.py; minivit's own MSA (layers/attention.py)
is the k = 1, no-bias, single-input case.
"""
import math

from ..conv.conv2d import (
    flat_linear_backward,
    flat_linear_forward,
    map_to_tokens,
    tokens_to_map,
)
from ..conv.unit import conv_unit_backward, conv_unit_forward
from ..layers.attention import head_view, merge_heads, softmax_backward, softmax_forward
from ..layers.block import add_prefix


def reduce_forward(x, p, state, hw, sr, train):
    """X' = BN(DWConv_{sr x sr, stride sr}(X)): (B, N, D) -> (B, N / sr^2, D)."""
    if sr == 1:
        return x, None
    r, c = conv_unit_forward(tokens_to_map(x, *hw), p, state, "sr.0.", "sr.1.", stride=sr,
                             depthwise=True, train=train)
    return map_to_tokens(r), (c, r.shape[2:])


def reduce_backward(dxr, cache):
    """dX' (B, N / sr^2, D) -> (dX (B, N, D), grads of sr.*): back through BN, then the strided
    depthwise conv's transpose (each input pixel gets its one window's weight times dX')."""
    if cache is None:
        return dxr, {}
    c, hw_r = cache
    dm, g = conv_unit_backward(tokens_to_map(dxr, *hw_r), c)
    return map_to_tokens(dm), g


def lmhsa_forward(x, p, state, rel_pos, hw, heads, sr, train=False):
    """x (B, N, D) on an (H, W) = hw map -> (B, N, D). p: q/k/v/proj (and sr.*) weights;
    rel_pos: B (heads, N, N / sr^2). The cache keeps A as cache["attn"] (B, heads, N, N/sr^2)."""
    q_, c_q = flat_linear_forward(x, p["q.weight"], p["q.bias"])
    xr, c_red = reduce_forward(x, p, state, hw, sr, train)           # (B, N', D)
    k_, c_k = flat_linear_forward(xr, p["k.weight"], p["k.bias"])
    v_, c_v = flat_linear_forward(xr, p["v.weight"], p["v.bias"])
    q, k, v = head_view(q_, heads), head_view(k_, heads), head_view(v_, heads)
    scale = 1.0 / math.sqrt(q.shape[-1])
    A = softmax_forward((q @ k.transpose(0, 1, 3, 2)) * scale + rel_pos)   # (B, h, N, N')
    out, c_proj = flat_linear_forward(merge_heads(A @ v), p["proj.weight"], p["proj.bias"])
    cache = {"q": q, "k": k, "v": v, "attn": A, "scale": scale, "lin": (c_q, c_k, c_v, c_proj),
             "reduce": c_red}
    return out, cache


def lmhsa_backward(dout, cache):
    """-> dx and grads for q, k, v, proj (, sr.*) and "relative_pos" (this block's share of dB)."""
    q, k, v, A, scale = cache["q"], cache["k"], cache["v"], cache["attn"], cache["scale"]
    c_q, c_k, c_v, c_proj = cache["lin"]
    dctx, g_proj = flat_linear_backward(dout, c_proj)
    dctx = head_view(dctx, q.shape[1])                                 # (B, h, N, Dh)
    dA = dctx @ v.transpose(0, 1, 3, 2)
    dv = A.transpose(0, 1, 3, 2) @ dctx
    dS = softmax_backward(dA, A)                                      # (B, h, N, N')
    dq = (dS @ k) * scale
    dk = (dS.transpose(0, 1, 3, 2) @ q) * scale
    dx, g_q = flat_linear_backward(merge_heads(dq), c_q)
    dxr, g_k = flat_linear_backward(merge_heads(dk), c_k)
    dxr_v, g_v = flat_linear_backward(merge_heads(dv), c_v)
    dx_red, g_red = reduce_backward(dxr + dxr_v, cache["reduce"])
    grads = {"relative_pos": dS.sum(axis=0), **g_red, **add_prefix(g_q, "q."),
             **add_prefix(g_k, "k."), **add_prefix(g_v, "v."), **add_prefix(g_proj, "proj.")}
    return dx + dx_red, grads
