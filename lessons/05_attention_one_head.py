# %% [markdown]
# # Lesson 5: scaled dot-product attention, one head
#
# > Paper, appendix A, eq. (5)-(7): [q, k, v] = z U_qkv, U_qkv in R^{D x 3 D_h};
# > A = softmax(q k^T / sqrt(D_h)), A in R^{N x N}; SA(z) = A v.
#
# Every token asks a question (its query q), every token offers a key k and a value v.
# Row i of A says how much token i takes from each token j: a softmax over j of the
# similarity q_i . k_j. The output of token i is the A-weighted mix of the values.
# Here one head with D_h = D = 128 on the 65 tokens of one CIFAR image.

# %%
import numpy as np

from minivit.layers import (
    attention_backward,
    attention_forward,
    linear_backward,
    linear_forward,
    softmax_backward,
    softmax_forward,
)
from minivit.lesson_utils import check, finish, gradcheck

rng = np.random.default_rng(0)
T, D = 65, 128
x = rng.standard_normal((1, T, D))                       # tokens z (after LayerNorm)
p = {"qkv.weight": rng.standard_normal((D, 3 * D)) / np.sqrt(D), "qkv.bias": np.zeros(3 * D),
     "proj.weight": rng.standard_normal((D, D)) / np.sqrt(D), "proj.bias": np.zeros(D)}
Wq, Wk, Wv = (p["qkv.weight"][:, i * D:(i + 1) * D] for i in range(3))     # U_qkv = [Q|K|V]

# %% [markdown]
# ## Softmax and its Jacobian
#
# a = softmax(s), a_i = exp(s_i) / sum_j exp(s_j). minivit subtracts max(s) first (the
# result is unchanged, exp cannot overflow). Differentiating,
#
#     da_i / ds_j = a_i (delta_ij - a_j),   i.e.   J = diag(a) - a a^T   (symmetric),
#
# so for an upstream gradient da the backward is J da = a * (da - sum_j da_j a_j): one
# elementwise product and one row sum, never the T x T Jacobian. That is `softmax_backward`.

# %%
s = rng.standard_normal(T) * 3
a = softmax_forward(s)
da = rng.standard_normal(T)
J = np.diag(a) - np.outer(a, a)
check("softmax rows sum to 1", a.sum(), 1.0, 1e-15)
check("softmax(s + 1000) = softmax(s)", softmax_forward(s + 1000.0), a, 1e-12)
check("J da == softmax_backward(da, a)", J @ da, softmax_backward(da, a), 1e-15)

# %% [markdown]
# ## Why divide by sqrt(D_h)
#
# If q and k have D_h independent entries of variance 1, q . k has variance D_h. With
# D_h = 128 the scores would spread over +-30 and the softmax would put almost all weight
# on one token, where its gradient (diag(a) - a a^T) is nearly zero. Dividing by sqrt(D_h)
# keeps the scores at unit variance.

# %%
q0, k0 = rng.standard_normal((T, D)), rng.standard_normal((T, D))
for name, sc in (("q.k", q0 @ k0.T), ("q.k / sqrt(D_h)", q0 @ k0.T / np.sqrt(D))):
    A0 = softmax_forward(sc)
    print(f"{name:<16} score std {sc.std():6.2f}   mean max_j A_ij {A0.max(-1).mean():.3f}")

# %% [markdown]
# ## One head written out, forward and backward
#
# Forward: S = q k^T / sqrt(d) + bias, A = softmax(S), out = A v.
# Backward, given dout = dL/dout (T_q x d), by the product rule through each line:
#
# * out = A v:            dA = dout v^T,     dv = A^T dout
# * A = softmax(S):       dS = A * (dA - rowsum(dA * A))      (the Jacobian above)
# * S = q k^T / sqrt(d):  dq = dS k / sqrt(d),   dk = dS^T q / sqrt(d)
# * S = ... + bias:       dbias = dS          (a learned bias, e.g. relative positions)


# %%
def one_head_forward(q, k, v, bias=None):
    """q (Tq, d), k and v (Tk, d) -> A v (Tq, d); bias added to the (Tq, Tk) scores."""
    S = q @ k.T / np.sqrt(q.shape[-1])
    A = softmax_forward(S if bias is None else S + bias)
    return A @ v, (q, k, v, A)


def one_head_backward(dout, cache):
    q, k, v, A = cache
    dS = softmax_backward(dout @ v.T, A)
    scale = 1.0 / np.sqrt(q.shape[-1])
    return dS @ k * scale, {"k": dS.T @ q * scale, "v": A.T @ dout, "bias": dS}


qkv = {"q": x[0] @ Wq, "k": x[0] @ Wk, "v": x[0] @ Wv, "bias": rng.standard_normal((T, T))}
gradcheck(one_head_forward, one_head_backward, qkv, x_name="q", max_elems=150)

# %% [markdown]
# minivit's `attention_forward(x, p, heads=1)` is this head plus the two linear maps around
# it: q, k, v = x U_qkv + b, and the output projection U_msa. Same numbers, forward and
# backward (dx collects three paths: dq U_q^T + dk U_k^T + dv U_v^T):

# %%
out, cache = attention_forward(x, p, heads=1)
ctx, c1 = one_head_forward(x[0] @ Wq, x[0] @ Wk, x[0] @ Wv)
check("A (one head) vs minivit", c1[3], cache["attn"][0, 0], 1e-14)
check("SA U_msa vs minivit", ctx @ p["proj.weight"], out[0], 1e-12)
dout = rng.standard_normal(out.shape)
dx, _ = attention_backward(dout, cache)
dq, g = one_head_backward(dout[0] @ p["proj.weight"].T, c1)
check("dx (one head) vs minivit", dq @ Wq.T + g["k"] @ Wk.T + g["v"] @ Wv.T, dx[0], 1e-12)

# %% [markdown]
# ## Masks: an additive bias on the scores
#
# A score of -inf becomes a weight exp(-inf) = 0: the key is invisible. minivit's
# `attention_forward(..., bias=...)` adds any array broadcastable to (B, heads, Tq, Tk).
#
# **Causal mask** (the original Transformer's decoder, GPT): token i may look only at
# j <= i, bias_ij = -inf for j > i. Then output i cannot depend on later tokens.

# %%
causal = np.triu(np.full((T, T), -np.inf), k=1)
out_c, cache_c = attention_forward(x, p, 1, bias=causal)
check("causal: A above diagonal = 0", np.triu(cache_c["attn"][0, 0], 1), np.zeros((T, T)), 0.0)
x_future = x.copy()
x_future[:, 40:] = rng.standard_normal((1, T - 40, D))                 # change tokens 40..64
check("causal: out[:40] ignores tokens 40+", attention_forward(x_future, p, 1, causal)[0][:, :40],
      out_c[:, :40], 1e-14)

# %% [markdown]
# **Padding mask**: sequences of different lengths share one batch by padding; padded keys
# get -inf, shape (B, 1, 1, Tk), one row per sequence broadcast over heads and queries.
# Sequence 1 below has 40 real tokens and 25 of junk; its real outputs must equal those of
# the 40 tokens alone.

# %%
xb = np.concatenate([x, rng.standard_normal((1, T, D))])             # (2, 65, 128)
pad = np.zeros((2, 1, 1, T))
pad[1, :, :, 40:] = -np.inf
out_b, _ = attention_forward(xb, p, 1, bias=pad)
alone, _ = attention_forward(xb[1:, :40], p, 1)
check("padding: batch == sequence alone", out_b[1, :40], alone[0], 1e-13)
check("padding: unmasked sequence intact", out_b[0], out[0], 1e-13)

# %% [markdown]
# ## Encoder-decoder (cross) attention, which ViT drops
#
# The original Transformer (Vaswani et al. 2017) has a decoder whose tokens y query the
# encoder's output z: q = y W_q, but k = z W_k and v = z W_v. ViT keeps only the encoder:
# a classifier reads the class token, nothing is decoded. Cross-attention is the same head
# with queries from one sequence and keys/values from another (T_q != T_k is fine):

# %%
Tdec = 10
y = rng.standard_normal((Tdec, D))                                   # decoder tokens


def cross_forward(y, z):
    (q, cq), (k, ck), (v, cv) = linear_forward(y, Wq), linear_forward(z, Wk), linear_forward(z, Wv)
    ctx, c = one_head_forward(q, k, v)                               # (Tdec, D)
    return ctx, (cq, ck, cv, c)


def cross_backward(dctx, cache):
    cq, ck, cv, c = cache
    dq, g = one_head_backward(dctx, c)                               # dz gets two paths:
    dz = linear_backward(g["k"], ck)[0] + linear_backward(g["v"], cv)[0]   # via k and via v
    return linear_backward(dq, cq)[0], {"z": dz}


gradcheck(cross_forward, cross_backward, {"y": y, "z": x[0].copy()}, x_name="y", max_elems=150)

# %% [markdown]
# Cross-attention is also self-attention over the joined sequence [y; z] with the keys of y
# masked out: rows of y then query only the keys and values of z. That lets us check the
# cross-attention above against minivit's `attention_forward` and `attention_backward`.

# %%
yz = np.concatenate([y, x[0]])[None]                                 # (1, Tdec + T, D)
only_z = np.zeros((Tdec + T, Tdec + T))
only_z[:, :Tdec] = -np.inf
out_yz, cache_yz = attention_forward(yz, p, 1, bias=only_z)
ctx_x, c_x = cross_forward(y, x[0])
check("cross-attn vs masked minivit", ctx_x @ p["proj.weight"], out_yz[0, :Tdec], 1e-12)
dout_yz = np.zeros_like(out_yz)
dout_yz[0, :Tdec] = rng.standard_normal((Tdec, D))                   # loss on y's rows only
dyz, _ = attention_backward(dout_yz, cache_yz)
dy, g = cross_backward(dout_yz[0, :Tdec] @ p["proj.weight"].T, c_x)
check("cross dy vs minivit", dy, dyz[0, :Tdec], 1e-12)
check("cross dz vs minivit", g["z"], dyz[0, Tdec:], 1e-12)
print("ViT itself is encoder-only: vit_forward passes no mask (bias=None) to any block")
finish()
