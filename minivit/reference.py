"""Naive reference versions with explicit loops over the batch, heads and patches.

They exist only to be read next to the vectorised layers and to test them (tests/, lessons/);
the model never calls them.
"""
import math

import numpy as np


def patchify_loops(images, P):
    """(B, C, H, W) -> (B, N, P*P*C), one patch at a time, flattened in (c, i, j) order."""
    B, C, H, W = images.shape
    out = np.empty((B, (H // P) * (W // P), C * P * P), dtype=images.dtype)
    for b in range(B):
        n = 0
        for r in range(0, H, P):
            for c in range(0, W, P):
                out[b, n] = images[b, :, r:r + P, c:c + P].reshape(-1)
                n += 1
    return out


def softmax_rows(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_loops(x, p, heads, bias=None):
    """MSA with a loop over the batch and over heads; returns (out (B,T,D), attn (B,H,T,T))."""
    B, T, D = x.shape
    Dh = D // heads
    Wq, Wk, Wv = (p["qkv.weight"][:, i * D:(i + 1) * D] for i in range(3))
    bq, bk, bv = (p["qkv.bias"][i * D:(i + 1) * D] for i in range(3))
    out = np.empty_like(x)
    attn = np.empty((B, heads, T, T), dtype=x.dtype)
    for b in range(B):
        heads_out = []
        for h in range(heads):
            cols = slice(h * Dh, (h + 1) * Dh)
            q = x[b] @ Wq[:, cols] + bq[cols]                         # (T, Dh)
            k = x[b] @ Wk[:, cols] + bk[cols]
            v = x[b] @ Wv[:, cols] + bv[cols]
            s = q @ k.T / math.sqrt(Dh)
            if bias is not None:
                s = s + np.broadcast_to(bias, (B, heads, T, T))[b, h]
            attn[b, h] = softmax_rows(s)
            heads_out.append(attn[b, h] @ v)
        out[b] = np.concatenate(heads_out, axis=-1) @ p["proj.weight"] + p["proj.bias"]
    return out, attn


def layernorm_loops(x, gamma, beta, eps=1e-6):
    """LayerNorm one token (row) at a time."""
    x2 = x.reshape(-1, x.shape[-1])
    out = np.empty_like(x2)
    for t in range(x2.shape[0]):
        mu = x2[t].mean()
        var = ((x2[t] - mu) ** 2).mean()
        out[t] = (x2[t] - mu) / math.sqrt(var + eps) * gamma + beta
    return out.reshape(x.shape)
