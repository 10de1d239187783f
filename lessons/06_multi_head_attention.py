# %% [markdown]
# # Lesson 6: multi-head self-attention, all heads at once
#
# > Paper, appendix A: "Multihead self-attention (MSA) is an extension of SA in which we
# > run k self-attention operations, called "heads", in parallel, and project their
# > concatenated outputs. To keep compute and number of parameters constant when changing
# > k, D_h (Eq. 5) is typically set to D/k."
#
# > Paper, eq. (8): MSA(z) = [SA_1(z); SA_2(z); ...; SA_k(z)] U_msa, U_msa in R^{k D_h x D}.
#
# CIFAR model: D = 128, k = 4 heads, D_h = 32. One head (lesson 5) compares whole
# 128-vectors; four heads each compare a 32-dimensional slice, so one token can attend to
# different tokens for different reasons.

# %%
import numpy as np

from minivit import ViTConfig, count_params, init_params
from minivit.layers import attention_backward, attention_forward
from minivit.layers.attention import merge_heads, split_heads
from minivit.layers.block import sub_params
from minivit.lesson_utils import check, check_true, finish, gradcheck
from minivit.reference import attention_loops

cfg = ViTConfig.cifar()
k, D, Dh = cfg.heads, cfg.dim, cfg.dim // cfg.heads
p = sub_params(init_params(cfg, seed=0, dtype="float64", zero_head=False), "blocks.0.attn.")
rng = np.random.default_rng(0)
p = {name: w + rng.normal(0, 0.02, w.shape) for name, w in p.items()}   # non-zero biases too
x = rng.standard_normal((2, 65, D))                                     # (B, T, D)
for name, w in p.items():
    print(f"{name:<12} {w.shape}")

# %% [markdown]
# ## The layout of U_qkv
#
# One matrix U_qkv (D x 3D) computes all queries, keys and values of all heads in one
# product: columns [Q | K | V], each D = k * D_h wide, and head h owns columns
# h*D_h:(h+1)*D_h of each. `split_heads` turns (B, T, 3D) into q, k, v of shape
# (B, k, T, D_h) with one reshape and one transpose; `merge_heads` puts the head outputs
# side by side again, [SA_1; ...; SA_k], before U_msa.

# %%
qkv = x @ p["qkv.weight"] + p["qkv.bias"]                       # (B, T, 3D)
q, keys, v = split_heads(qkv, k)                                # k (the head count) is taken
print("qkv", qkv.shape, "-> q, keys, v", q.shape)
h = 2
cols = slice(D + h * Dh, D + (h + 1) * Dh)                      # head 2's key columns
check("keys of head 2 = x U_qkv[:, K cols of 2]", keys[:, h], x @ p["qkv.weight"][:, cols]
      + p["qkv.bias"][cols], 1e-13)
check("merge_heads puts head 2 at 64:96", merge_heads(q)[..., 2 * Dh:3 * Dh], q[:, 2], 0.0)

# %% [markdown]
# ## All heads in one batched operation
#
# Matrix multiplication broadcasts over leading axes: (B, k, T, D_h) @ (B, k, D_h, T) is
# B*k independent (T x D_h)(D_h x T) products in one call. So the scores, the softmax and
# A v for every image and every head are three array operations with no Python loop.
# `minivit.reference.attention_loops` is the same computation with explicit loops over
# images and heads, kept (and tested) as a reference.

# %%
out, cache = attention_forward(x, p, k)
ref_out, ref_attn = attention_loops(x, p, k)
check("MSA out vs per-head loops", out, ref_out, 1e-12)
check("A (B, k, T, T) vs loops", cache["attn"], ref_attn, 1e-14)
check("every row of A sums to 1", cache["attn"].sum(-1), np.ones((2, k, 65)), 1e-13)

# %% [markdown]
# The heads are independent until U_msa mixes them: change head 2's key columns of U_qkv
# and only head 2's attention map moves.

# %%
p2 = dict(p, **{"qkv.weight": p["qkv.weight"].copy()})
p2["qkv.weight"][:, cols] += rng.standard_normal((D, Dh))
A2 = attention_forward(x, p2, k)[1]["attn"]
others = [0, 1, 3]
check("heads 0, 1, 3 unchanged", A2[:, others], cache["attn"][:, others], 0.0)
moved = np.abs(A2[:, h] - cache["attn"][:, h]).max()
check_true("head 2 changed", moved > 1e-3, f"max change {moved:.3f}")

# %% [markdown]
# The parameter count does not depend on k: U_qkv is D x 3D and U_msa is D x D whatever the
# split, 4 D^2 + 4 D with biases. (Compute is the same too, except the k T x T score maps.)

# %%
per_block = {}
for heads in (1, 2, 4, 8):
    c = cfg.replace(heads=heads)
    per_block[heads] = count_params(c.replace(depth=2)) - count_params(c.replace(depth=1))
    print(f"heads {heads}: one block has {per_block[heads]:,} parameters")
check_true("block size independent of k", len(set(per_block.values())) == 1, str(per_block[1]))
n_attn = sum(w.size for w in p.values())
check_true("4 D^2 + 4 D per attention", n_attn == 4 * D * D + 4 * D, f"{n_attn:,}")

# %% [markdown]
# ## Backward, batched
#
# Read the forward bottom-up; each line is lesson 5's one-head backward with the head
# axis carried along (all products are batched over (B, k)):
#
# 1. out = ctx U_msa + b:   dctx = dout U_msa^T,  dU_msa = ctx^T dout,  db = sum dout
# 2. ctx = merge_heads(A v): reshape dctx back to (B, k, T, D_h)
# 3. A v:                   dA = dctx v^T,  dv = A^T dctx
# 4. softmax:               dS = A * (dA - rowsum(dA * A))
# 5. S = q k^T / sqrt(D_h): dq = dS k / sqrt(D_h),  dk = dS^T q / sqrt(D_h)
# 6. split_heads:           stack (dq, dk, dv) and undo the transpose -> d qkv (B, T, 3D)
# 7. qkv = x U_qkv + b:     dx = dqkv U_qkv^T,  dU_qkv = x^T dqkv,  db = sum dqkv
#
# `attention_backward` is these seven steps. Check it numerically (float64, random
# elements of each tensor):


# %%
def msa_forward(x, **weights):
    return attention_forward(x, weights, k)


gradcheck(msa_forward, attention_backward, {"x": x[:1, :20].copy(), **p}, max_elems=120)
finish()
