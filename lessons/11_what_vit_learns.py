# %% [markdown]
# # Lesson 11: what a ViT learns, and how to use it elsewhere
#
# The paper looks inside its models (Fig. 6, 7, 14) and reuses them (Sec. 3.2, 4.1). This
# lesson runs each of minivit's tools for that, on a small model, and checks what each one
# computes:
#
# | tool | question | module |
# | --- | --- | --- |
# | attention rollout | which patches feed the class token? | `minivit.analysis.rollout` |
# | mean attention distance | how far does each head look? | `minivit.analysis.distance` |
# | position-embedding similarity | did E_pos learn the 2-D grid? | `minivit.analysis.posembed` |
# | filters of E | what does the patch embedding detect? | `minivit.analysis.filters` |
# | pos_embed resizing | run at 48 px a model trained at 32 px | `minivit.transfer.resize` |
# | few-shot linear probe | how good are the frozen features? | `minivit.transfer.linear_probe` |
#
# Set `MINIVIT_CHECKPOINT=runs/...` (a run folder or its best.npz) to look at a trained
# CIFAR-10 model (a plain ViT, any position embedding); without it
# the model is freshly initialised (the tools work the same, the pictures show less).

# %%
import os
import tempfile

import numpy as np

from minivit import ViTConfig, attention_maps, init_params, vit_forward
from minivit.analysis import (
    attention_rollout,
    embedding_filters,
    mean_attention_distance,
    neighbour_similarity,
    patch_distances,
    patch_position_embeddings,
    pos_embed_similarity,
    rollout_map,
)
from minivit.lesson_utils import check, check_true, finish
from minivit.transfer import resize_grid, resize_params
from minivit.transfer.linear_probe import fewshot_accuracy, prelogits

# %%
if os.environ.get("MINIVIT_CHECKPOINT"):
    from minivit.analyze import read_checkpoint
    params, cfg = read_checkpoint(os.environ["MINIVIT_CHECKPOINT"])
    params = {k: v.astype(np.float64) for k, v in params.items()}  # the checks' float64
else:
    cfg = ViTConfig.cifar(depth=4)                 # P=4: an 8 x 8 grid, z0 is 65 x 128
    params = init_params(cfg, seed=0, dtype="float64")
rng = np.random.default_rng(0)
dtype = params["patch_embed.weight"].dtype
images = rng.standard_normal((8, 3, 32, 32)).astype(dtype)
logits, cache = vit_forward(params, images, cfg)
maps = attention_maps(cache)                       # [(B, heads, T, T)] per block
print(cfg.depth, "blocks; attention maps", maps[0].shape)

# %% [markdown]
# ## Attention rollout (Abnar & Zuidema 2020)
#
# A block's output token is half attention, half itself (the residual), so each layer's
# head-averaged attention becomes A_hat = (A_bar + I) / 2 (rows still sum to 1), and the
# share of input token j in output token i after all layers is the product
# R = A_hat_L ... A_hat_1. Row 0 (the class token) over the patches is the map drawn on
# the image.

# %%
R = attention_rollout(maps)                                    # (B, T, T)
ref = np.eye(cfg.num_tokens)
for A in maps:
    ref = (0.5 * A[3].mean(0) + 0.5 * np.eye(cfg.num_tokens)) @ ref
check("rollout = product of (A_bar + I)/2", R[3], ref, 1e-12)
check("rollout rows sum to 1", R.sum(-1), np.ones(R.shape[:2]), 1e-12)
heat = rollout_map(maps, cfg.grid)                             # (B, 8, 8)
print("class-token rollout of image 0 (x100):\n", np.round(100 * heat[0], 1))

# %% [markdown]
# ## Mean attention distance
#
# For each head: the attention-weighted pixel distance between a query patch and the patches
# it attends to, averaged over query patches and images. The class token has no position,
# so it is left out and each patch row is renormalised over the patches. The paper finds
# some heads already attend globally in the lowest layers while others stay local.

# %%
dist = mean_attention_distance(maps, cfg.grid, cfg.patch_size)    # (L, heads) in pixels
print("mean attention distance (px), layer x head:\n", np.round(dist, 1))
N = cfg.num_patches
uniform = np.full((1, 1, N + 1, N + 1), 1.0 / (N + 1))
check("uniform attention -> mean pair distance",
      mean_attention_distance([uniform], cfg.grid, cfg.patch_size)[0, 0],
      patch_distances(cfg.grid, cfg.patch_size).mean(), 1e-12)
check("attending to oneself -> 0 px",
      mean_attention_distance([np.eye(N + 1)[None, None]], cfg.grid, cfg.patch_size)[0, 0],
      0.0)

# %% [markdown]
# ## Position-embedding similarity
#
# Cosine similarity of each patch's E_pos with every other's, one tile per patch. A trained
# 1-D E_pos learns the 2-D layout: each tile is bright around its own position. A fresh
# N(0, 0.02) one is bright only at the patch itself. A smooth 2-D embedding (sines of the
# row and column, as the "2d" variant's tables could learn) shows the structure we look for.

# %%
h, w = cfg.grid
if cfg.pos_embed in ("1d", "2d"):
    sim = pos_embed_similarity(patch_position_embeddings(params, cfg))
    print("E_pos: mean cosine with the right-hand neighbour", round(neighbour_similarity(sim), 3))
freq = np.arange(1, 9)[None, :] * np.pi / 16
rows, cols = np.sin(np.arange(h)[:, None] * freq), np.sin(np.arange(w)[:, None] * freq + 1)
smooth = np.concatenate([np.repeat(rows[:, None], w, 1), np.repeat(cols[None], h, 0)], -1)
s = pos_embed_similarity(smooth)
check_true("smooth 2-D E_pos: neighbours more alike than far patches",
           s[3, 3, 3, 4] > s[3, 3, 3, 7] and s[3, 3, 4, 3] > s[3, 3, 7, 3],
           f"{s[3, 3, 3, 4]:.2f} > {s[3, 3, 3, 7]:.2f}")

# %% [markdown]
# ## The filters of the patch embedding E
#
# E (P^2 C x D) holds D linear filters of a P x P x C patch. Their principal components,
# reshaped to P x P x C images, are what the paper draws (Fig. 7, left); patches are
# flattened in (c, i, j) order, so each component is read back as (C, P, P).

# %%
comps, ratio = embedding_filters(params["patch_embed.weight"], cfg.patch_size)
print("first components explain", np.round(100 * ratio[:5], 1), "% of the variance")
planted = np.zeros((cfg.patch_dim, 64))
planted[(2 * 4 + 1) * 4 + 3] = rng.standard_normal(64)   # channel 2 (blue), row 1, column 3
c, _ = embedding_filters(planted + 1e-3 * rng.standard_normal(planted.shape), 4, n=1)
check("planted filter found at (row 1, col 3, blue)", abs(c[0, 1, 3, 2]), 1.0, 1e-3)

# %% [markdown]
# ## Another resolution: interpolate E_pos
#
# At 48 px the grid is 12 x 12 instead of 8 x 8. E (the patch filters) does not change; E_pos
# is interpolated as an image per channel, the class token's row kept. "bilinear" aligns the
# corners (the official code's scipy.ndimage.zoom, order 1), so a linear ramp stays exact.

# %%
cfg48 = cfg.replace(image_size=48)
p48 = resize_params(params, cfg, cfg48, mode="bilinear")
out48, _ = vit_forward(p48, rng.standard_normal((2, 3, 48, 48)).astype(dtype), cfg48)
check_true("the 32 px model runs at 48 px", out48.shape == (2, cfg.num_classes),
           f"{cfg.grid} grid -> {cfg48.grid}")
ramp = (np.arange(8)[:, None, None] * 2.0 + np.arange(8)[None, :, None] * 0.5) * np.ones(3)
big = resize_grid(ramp, (12, 12))
a = np.arange(12) * 7 / 11
check("ramp stays a ramp (corner-aligned)", big[..., 0],
      a[:, None] * 2.0 + a[None, :] * 0.5, 1e-12)


# %% [markdown]
# ## Few-shot linear probe on frozen features
#
# The features are the pre-logits y = LN(z_L^0). With `shots` images per class, a closed-form
# ridge regression to {-1, +1} targets (big_vision's evaluator: standardised features, a bias
# feature, lambda = 2^10) classifies the rest. Here the classes are synthetic: which colour
# channel is brightest. Even random-init features separate them; a trained model does better
# on real classes.

# %%
def colour_images(n, seed):
    r = np.random.default_rng(seed)
    y = np.arange(n) % 3                         # balanced: n/3 per class
    x = r.standard_normal((n, 3, 32, 32)) * 0.5
    x[np.arange(n), y] += 1.0
    return x.astype(dtype), y


p32 = {k: v.astype(np.float32) for k, v in params.items()}   # features need no float64
xtr, ytr = colour_images(75, 1)
xte, yte = colour_images(30, 2)
acc = fewshot_accuracy(prelogits(p32, xtr.astype(np.float32), cfg), ytr,
                       prelogits(p32, xte.astype(np.float32), cfg), yte, shots=(1, 5, 10, 25))
print("few-shot accuracy:", acc)
check_true("25-shot probe well above chance (1/3)", acc[25] > 0.8, f"{acc[25]:.2f}")

# %% [markdown]
# ## All figures at once
#
# `python -m minivit.analyze CHECKPOINT --out DIR` writes rollout.png, attention_distance.png,
# pos_embed_similarity.png (learned absolute E_pos only) and embedding_filters.png; here into a
# temporary folder.

# %%
try:
    from minivit.analyze import analyze
    with tempfile.TemporaryDirectory(prefix="lesson11_") as out:
        analyze(p32, cfg, images[:4].astype(np.float32), out)
        pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
        expected = 4 if cfg.pos_embed in ("1d", "2d") else 3     # no E_pos: no similarity
        check_true("figures written", len(pngs) == expected, ", ".join(pngs))
except RuntimeError as e:                      # matplotlib is an optional extra
    print("skipped the figures:", e)
finish()
