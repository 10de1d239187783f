# %% [markdown]
# # Lesson 8: the encoder block - pre-LN, residuals, stochastic depth
#
# > Paper, eq. (2): z'_l = MSA(LN(z_{l-1})) + z_{l-1},   l = 1 ... L
#
# > Paper, eq. (3): z_l = MLP(LN(z'_l)) + z'_l,            l = 1 ... L
#
# Each block adds two *branches* to a running sum, the residual stream z. LayerNorm sits at
# the start of each branch ("pre-LN"). The original Transformer put it after the sum
# ("post-LN": z'_l = LN(z_{l-1} + MSA(z_{l-1}))), so every layer renormalised the stream;
# with pre-LN the stream itself is never normalised, only read. The block is
# `minivit.layers.block_forward` / `block_backward`; shapes stay (B, 65, 128) throughout.

# %%
import numpy as np

from minivit import ViTConfig, init_params
from minivit.backend import default_rng
from minivit.layers import (
    attention_backward,
    block_backward,
    block_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
    mlp_backward,
)
from minivit.layers.block import sub_params
from minivit.layers.layernorm import fold_into_linear, unfold_grads
from minivit.lesson_utils import check, check_true, finish, gradcheck

cfg = ViTConfig.cifar()
rng = np.random.default_rng(0)
p = sub_params(init_params(cfg, seed=0, dtype="float64", zero_head=False), "blocks.0.")
p = {k: v + rng.normal(0, 0.02, v.shape) for k, v in p.items()}
z = rng.standard_normal((2, 65, cfg.dim))
z2, cache = block_forward(z, p, cfg.heads)
print("z_{l-1}", z.shape, "-> z_l", z2.shape, "| parameters:", ", ".join(p))

# %% [markdown]
# ## Residuals: an identity path, and gradients that add
#
# If the last layer of each branch (U_msa and W_2 of the MLP) is zero, both branches output
# zero and the block is exactly the identity, forward and backward. A deep pre-LN stack
# therefore starts close to "do nothing" and learns what to add.

# %%
zeroed = dict(p)
for name in ("attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
    zeroed[name] = np.zeros_like(p[name])
z_id, c_id = block_forward(z, zeroed, cfg.heads)
dz2 = rng.standard_normal(z.shape)
check("zero branches: z_l = z_{l-1}", z_id, z, 0.0)
check("zero branches: dz_{l-1} = dz_l", block_backward(dz2, c_id)[0], dz2, 0.0)

# %% [markdown]
# In general, for y = x + f(x) the chain rule gives dL/dx = dL/dy + f'(x)^T dL/dy: the
# gradient reaching the sum goes *both* ways and the two contributions add. Read the block
# backwards:
#
#     dz'_l     = dz_l  + LN_2'( MLP'( dz_l ) )          (eq. 3 backwards)
#     dz_{l-1}  = dz'_l + LN_1'( MSA'( dz'_l ) )         (eq. 2 backwards)
#
# where X'(d) means "X's backward applied to d". Written as a loop over the two branches,
# last first, from the block's cache (c_ln1, c_attn, c_dp1, c_ln2, c_mlp, c_dp2, fold):

# %%
c_ln1, c_attn, _, c_ln2, c_mlp, _, _ = cache
d = dz2
for ln_cache, branch_backward, branch_cache in ((c_ln2, mlp_backward, c_mlp),
                                                (c_ln1, attention_backward, c_attn)):
    through_branch = layernorm_backward(branch_backward(d, branch_cache)[0], ln_cache)[0]
    print(f"  |identity path| {np.linalg.norm(d):8.2f}   |through branch| "
          f"{np.linalg.norm(through_branch):8.2f}")
    d = d + through_branch                                 # the two paths add
dz, grads = block_backward(dz2, cache)
check("identity + branches == block_backward", d, dz, 1e-12)

# %% [markdown]
# The identity path carries dz_l to dz_{l-1} unchanged, so the gradient at the first
# block is the top gradient plus corrections, however deep the network. With post-LN the
# same gradient passes through L LayerNorm Jacobians on the way down, which is why post-LN
# Transformers need a learning-rate warm-up to train at all (Xiong et al. 2020) and pre-LN
# is the usual choice, ViT included.

# %% [markdown]
# ## LayerNorm's gamma and beta live in the next linear layer
#
# Each LN feeds a linear layer (U_qkv, the MLP's W_1), and an affine map followed by a linear
# one is one linear map: LN(z) U + b = (xhat gamma + beta) U + b = xhat (diag(gamma) U) +
# (beta U + b). So the block normalises alone (xhat) and multiplies by the folded weights:
# two passes over every token (times gamma, plus beta) become products over U (128 x 384),
# and backward unfolds: dU = diag(gamma) dU' + beta^T db', dgamma = rowsum(U * dU'),
# dbeta = U db'. That is why the LN caches above hold gamma = None. (On a GPU the fused
# LayerNorm kernel applies gamma and beta in its one pass anyway, so there the block skips the
# fold: it would only add kernel launches. Same math, see minivit/layers/block.py.)

# %%
U, b = p["attn.qkv.weight"], p["attn.qkv.bias"]
y, _ = layernorm_forward(z, p["norm1.weight"], p["norm1.bias"])
xhat, _ = layernorm_forward(z, None, None)
gamma, beta = p["norm1.weight"], p["norm1.bias"]
folded, c_fold = linear_forward(xhat, *fold_into_linear(gamma, beta, U, b))
check("LN(z) U + b == xhat (diag(gamma) U) + (beta U + b)", linear_forward(y, U, b)[0], folded,
      1e-12)
G = rng.standard_normal(folded.shape)                      # some dL/d(qkv)
_, g_folded = linear_backward(G, c_fold)                   # dU', db'
g_lin, g_ln = unfold_grads(gamma, beta, U, g_folded["weight"], g_folded["bias"])
dy = G @ U.T                                               # dL/dy, y = LN(z), unfolded
check("dgamma = rowsum(U * dU') == sum of dy * xhat", g_ln["weight"], (dy * xhat).sum((0, 1)),
      1e-10)
check("dbeta = U db' == sum of dy", g_ln["bias"], dy.sum((0, 1)), 1e-10)
check("dU = diag(gamma) dU' + beta^T db' == y^T G", g_lin["weight"],
      y.reshape(-1, cfg.dim).T @ G.reshape(-1, G.shape[-1]), 1e-10)

# %% [markdown]
# ## Stochastic depth (drop-path)
#
# Not in the ViT paper; DeiT (Touvron et al. 2021) and most later recipes for training
# ViTs from scratch on small data use it. During training each *branch* of each sample is
# dropped with probability p (its output multiplied by 0), and kept ones are scaled by
# 1/(1-p); at test time nothing is dropped. A sample whose two branches are both dropped
# passes the block unchanged, so the network is, per sample, a random shallower one
# (Huang et al. 2016). minivit raises the rate linearly with depth, from 0 at block 1 to
# `drop_path` at block L (`ViTConfig.drop_path_rates()`).

# %%
print("drop_path=0.1, depth 6: rates", [round(r, 3) for r in cfg.replace(drop_path=0.1)
                                        .drop_path_rates()])
zb = rng.standard_normal((16, 65, cfg.dim))
zb2, cb = block_forward(zb, p, cfg.heads, drop_path=0.5, rng=default_rng(3), train=True)
keep_attn, keep_mlp = cb[2][:, 0, 0], cb[5][:, 0, 0]                 # per-sample masks
both = (keep_attn == 0) & (keep_mlp == 0)
print("kept attention branch:", (keep_attn > 0).astype(int), "\nkept MLP branch:      ",
      (keep_mlp > 0).astype(int))
check_true("some samples skip the block", both.any(), f"{both.sum()} of 16")
check("those pass unchanged", zb2[both], zb[both], 0.0)
dzb = rng.standard_normal(zb.shape)
check("and their gradient too", block_backward(dzb, cb)[0][both], dzb[both], 0.0)
check("train=False ignores drop_path",
      block_forward(z, p, cfg.heads, drop_path=0.5, train=False)[0], z2, 0.0)

# %% [markdown]
# ## Numerical check of the whole block
#
# Dropout 0.1, attention dropout 0.1 and drop-path 0.3 in training mode: the generator is
# re-seeded on every call, so every evaluation draws the same masks and the function is
# differentiable. Random elements of all 12 parameter tensors and of the input.


# %%
def block_train(x, **weights):
    return block_forward(x, weights, cfg.heads, dropout=0.1, attn_dropout=0.1, drop_path=0.3,
                         rng=default_rng(11), train=True)


gradcheck(block_train, block_backward, {"x": zb[:4, :5].copy(), **p}, max_elems=40)
finish()
