# %% [markdown]
# # Lesson 3: embeddings - E, the class token, E_pos and z_0
#
# > Paper, eq. (1): z_0 = [x_class; x_p^1 E; x_p^2 E; ...; x_p^N E] + E_pos,
# > E in R^{(P^2 C) x D}, E_pos in R^{(N+1) x D}.
#
# > Paper, section 3.1: "Similar to BERT's [class] token, we prepend a learnable embedding
# > to the sequence of embedded patches (z_0^0 = x_class), whose state at the output of the
# > Transformer encoder (z_L^0) serves as the image representation y".
#
# Three learned things build the first sequence of tokens z_0:
#
# | name in minivit | paper | shape (CIFAR) | role |
# | --- | --- | --- | --- |
# | `patch_embed.weight`, `.bias` | E (and a bias) | (48, 128), (128,) | patch -> D (lesson 2) |
# | `cls_token` | x_class | (1, 1, 128) | one extra token, the same for every image |
# | `pos_embed` | E_pos | (1, 65, 128) | a learned vector per position, added |
#
# Without E_pos the Transformer could not tell where a patch came from: attention and the
# MLP treat the tokens as a set, so permuting the patches would permute the outputs and
# nothing else. Adding E_pos[n] to token n breaks that symmetry.

# %%
import numpy as np

from minivit import ViTConfig, init_params
from minivit.layers import (
    embed_tokens_backward,
    embed_tokens_forward,
    patch_embed_backward,
    patch_embed_forward,
)
from minivit.lesson_utils import check, check_true, finish, gradcheck

cfg = ViTConfig.cifar()
params = init_params(cfg, seed=0, dtype="float64")
for name in ("patch_embed.weight", "patch_embed.bias", "cls_token", "pos_embed"):
    a = params[name]
    print(f"{name:<20} {str(a.shape):<14} mean {a.mean():+.4f}  std {a.std():.4f}")

# %% [markdown]
# The initialisation follows the reference code: E xavier-uniform, the class token zero,
# E_pos drawn from N(0, 0.02^2). Give the class token a random value here so that the
# checks below can see it.

# %%
rng = np.random.default_rng(0)
params["cls_token"] = rng.standard_normal((1, 1, cfg.dim)) * 0.02
images = rng.standard_normal((2, 3, 32, 32))
e, c_patch = patch_embed_forward(images, params["patch_embed.weight"],
                                 params["patch_embed.bias"], cfg.patch_size)     # (B, 64, D)
z0, c_tok = embed_tokens_forward(e, params["cls_token"], params["pos_embed"])     # (B, 65, D)
print("e", e.shape, "-> z0", z0.shape)
check("z0[:, 0] = x_class + E_pos[0]", z0[:, 0],
      np.broadcast_to(params["cls_token"][0, 0] + params["pos_embed"][0, 0], (2, cfg.dim)), 1e-15)
check("z0[:, 1:] = x_p E + E_pos[1:]", z0[:, 1:], e + params["pos_embed"][:, 1:], 1e-15)

# %% [markdown]
# Without E_pos, shuffling the patches only shuffles the tokens; with it, it does not:

# %%
perm = rng.permutation(64)
e_shuffled = e[:, perm]
z_nopos, _ = embed_tokens_forward(e_shuffled, params["cls_token"], np.zeros((1, 65, cfg.dim)))
check("no E_pos: shuffle in = shuffle out", z_nopos[:, 1:], e[:, perm], 0.0)
z_pos, _ = embed_tokens_forward(e_shuffled, params["cls_token"], params["pos_embed"])
moved = np.abs(z_pos[:, 1:] - z0[:, 1:][:, perm]).max()
check_true("with E_pos: position matters", moved > 1e-3, f"max change {moved:.3f}")

# %% [markdown]
# ## Where the gradients come from
#
# z_0 is built by placing and adding, so its backward only routes and sums. Let dz_0 be
# dL/dz_0, shape (B, 65, D).
#
# * E_pos is added to every image of the batch: dL/dE_pos = sum over b of dz_0[b],
#   shape (1, 65, D).
# * x_class sits in row 0 of every image: dL/dx_class = sum over b of dz_0[b, 0].
# * The patch embeddings e sit in rows 1..64: dL/de = dz_0[:, 1:]. From there lesson 2's
#   backward gives dL/dE = x_p^T de, summed over all B*64 patches.
#
# The class token therefore learns only from what flows back into row 0. In the ViT, the
# classifier reads row 0 of the last layer, and attention carries that gradient back to
# every token of every earlier layer; at layer 0 it arrives at x_class and E_pos[0].
#
# `pool="gap"` (global average pooling) is the variant without a class token: the head
# averages all tokens instead. Then z_0 is 64 x D and E_pos is 64 x D.

# %%
dz0 = rng.standard_normal(z0.shape)
de, g_tok = embed_tokens_backward(dz0, c_tok)
check("dE_pos = sum_b dz0", g_tok["pos_embed"], dz0.sum(0, keepdims=True), 1e-15)
check("dx_class = sum_b dz0[:, 0]", g_tok["cls_token"][0, 0], dz0[:, 0].sum(0), 1e-15)
check("de = dz0[:, 1:]", de, dz0[:, 1:], 0.0)
gap = cfg.replace(pool="gap")
print("pool='gap': tokens", gap.num_tokens, "| pos_embed", init_params(gap)["pos_embed"].shape,
      "| cls_token present:", "cls_token" in init_params(gap))

# %% [markdown]
# ## Numerical check
#
# The whole embedding, images -> z_0, as one function of (images, E, b, x_class, E_pos),
# against the two backward passes chained: dz_0 -> (de, dx_class, dE_pos) -> (dimages,
# dE, db). Central differences in float64, on random elements of each tensor.


# %%
def embed_forward(images, weight, bias, cls_token, pos_embed):
    e, c1 = patch_embed_forward(images, weight, bias, cfg.patch_size)
    z0, c2 = embed_tokens_forward(e, cls_token, pos_embed)
    return z0, (c1, c2)


def embed_backward(dz0, cache):
    de, g_tok = embed_tokens_backward(dz0, cache[1])
    dimages, g_patch = patch_embed_backward(de, cache[0])
    return dimages, {**g_tok, **g_patch}


gradcheck(embed_forward, embed_backward,
          {"images": images, "weight": params["patch_embed.weight"],
           "bias": params["patch_embed.bias"], "cls_token": params["cls_token"],
           "pos_embed": params["pos_embed"]}, x_name="images", max_elems=200)
finish()
