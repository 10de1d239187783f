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


def conv_stride_p_loops(img, w, b, P):
    """A P x P, stride-P convolution as a direct sliding-window sum, one window at a time:
    img (C, H, W), w (D, C, P, P), b (D,) -> (D, H/P, W/P)."""
    out = np.empty((w.shape[0], img.shape[1] // P, img.shape[2] // P))
    for r in range(out.shape[1]):
        for c in range(out.shape[2]):
            window = img[:, r * P:(r + 1) * P, c * P:(c + 1) * P]          # (C, P, P)
            out[:, r, c] = (w * window).sum(axis=(1, 2, 3)) + b
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


# Whole-array versions of the chunked, threaded layers (plain NumPy expressions, one pass per
# operation, the textbook formulas): the oracles the fast paths are tested against.

def gelu_plain(x, approximate="none"):
    """(GELU(x), GELU'(x)) with math.erf, elementwise in float64."""
    x64 = np.asarray(x, dtype=np.float64)
    if approximate == "none":
        cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x64 / math.sqrt(2.0)))
        d = cdf + x64 * np.exp(-0.5 * x64 * x64) / math.sqrt(2.0 * math.pi)
    else:
        c = math.sqrt(2.0 / math.pi)
        t = np.tanh(c * (x64 + 0.044715 * x64 ** 3))
        cdf = 0.5 * (1.0 + t)
        d = cdf + 0.5 * x64 * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x64 * x64)
    return x64 * cdf, d


def layernorm_backward_plain(dy, x, gamma, eps=1e-6):
    """(dx, dgamma, dbeta) of LayerNorm by the three-term formula over whole arrays."""
    mu = x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + eps)
    xhat = (x - mu) * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True)
                 - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    axes = tuple(range(x.ndim - 1))
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


def softmax_backward_plain(dA, A):
    """dS = A * (dA - sum_j dA_j A_j) over whole arrays."""
    return A * (dA - (dA * A).sum(axis=-1, keepdims=True))
