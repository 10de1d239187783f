# %% [markdown]
# # Lesson 9: the whole ViT
#
# > Paper, eq. (1): z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos
# > Paper, eq. (2): z'_l = MSA(LN(z_{l-1})) + z_{l-1},   l = 1 ... L
# > Paper, eq. (3): z_l = MLP(LN(z'_l)) + z'_l,           l = 1 ... L
# > Paper, eq. (4): y = LN(z_L^0)
#
# Lessons 2-8 built every piece. Here they are put in order, forward and backward, and
# checked against `minivit.vit_forward` / `vit_backward`, against central differences, and
# against a plain PyTorch model. The classification head is one linear layer on y.

# %%
import importlib.util
import os
from pathlib import Path

import numpy as np

from minivit import (
    ViTConfig,
    attention_maps,
    count_params,
    init_params,
    vit_b16,
    vit_backward,
    vit_forward,
    vit_h14,
    vit_l16,
)
from minivit.io import to_timm_state_dict
from minivit.layers import (
    block_backward,
    block_forward,
    embed_tokens_backward,
    embed_tokens_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
    patch_embed_backward,
    patch_embed_forward,
)
from minivit.layers.block import sub_params
from minivit.lesson_utils import check, check_true, finish, gradcheck

cfg = ViTConfig.cifar()
rng = np.random.default_rng(0)
p = {k: v + rng.normal(0, 0.02, v.shape)                                 # non-zero head too
     for k, v in init_params(cfg, seed=0, dtype="float64").items()}
images = rng.standard_normal((2, 3, 32, 32))
L = cfg.depth

# %% [markdown]
# ## Forward: an ordered list of calls
#
# Each call returns its output and a cache (what its backward needs). Keep the caches in a
# list; the backward walks it in reverse.

# %%
caches = []
e, c = patch_embed_forward(images, p["patch_embed.weight"], p["patch_embed.bias"], 4)
caches.append(c)
z, c = embed_tokens_forward(e, p["cls_token"], p["pos_embed"])
caches.append(c)
print(f"{'patch_embed_forward':<28} images {images.shape} -> e {e.shape}")
print(f"{'embed_tokens_forward':<28} -> z_0 {z.shape}")
for i in range(L):
    z, c = block_forward(z, sub_params(p, f"blocks.{i}."), cfg.heads)
    caches.append(c)
print(f"{'block_forward x ' + str(L):<28} -> z_{L} {z.shape}")
y, c = layernorm_forward(z[:, 0], p["norm.weight"], p["norm.bias"], cfg.ln_eps)
caches.append(c)
logits, c = linear_forward(y, p["head.weight"], p["head.bias"])
caches.append(c)
print(f"{'layernorm_forward':<28} z_L^0 {z[:, 0].shape} -> y {y.shape}")
print(f"{'linear_forward (head)':<28} -> logits {logits.shape}")
ref_logits, cache = vit_forward(p, images, cfg)
check("hand-ordered forward == vit_forward", logits, ref_logits, 1e-12)

# %% [markdown]
# ## Backward: the same list, reversed
#
# Start from dL/dlogits (a random one here; lesson 10 gets it from the loss). The head's
# LayerNorm only saw token 0, so only row 0 of dz_L is non-zero; attention then spreads the
# gradient to every token. Each block adds its branches' gradients to the identity path
# (lesson 8), so |dz| changes by modest factors from block to block, with one exception
# explained below the printout.

# %%
dlogits = rng.standard_normal(logits.shape)
c_patch, c_tok, *c_blocks, c_norm, c_head = caches
dy, g_head = linear_backward(dlogits, c_head)
dz0, g_norm = layernorm_backward(dy, c_norm)
dz = np.zeros_like(z)
dz[:, 0] = dz0
print(f"{'linear_backward (head)':<28} |dz_L| = {np.linalg.norm(dz):.3f} (row 0 only)")
for i in reversed(range(L)):
    dz, _ = block_backward(dz, c_blocks[i])
    print(f"{f'block_backward {i + 1}':<28} |dz_{i}| = {np.linalg.norm(dz):.3f}")
_, _, rstd = c_blocks[0][0]              # block 1's LN_1 cache: (xhat, gamma (None), 1/std)
row0, std0 = np.linalg.norm(dz[:, 0]), 1.0 / rstd[0, 0, 0]
print(f"row 0 (class token) carries |dz_0[:, 0]| = {row0:.3f}; std of that token in z_0 {std0:.3f}")
check_true("block 1's jump is the class token", row0 > 0.9 * np.linalg.norm(dz), "row 0 > 90%")

# %% [markdown]
# The jump at block 1 is LayerNorm's backward (lesson 4), which multiplies by 1/std of each
# token. The class token entering block 1 is x_class + E_pos[0], two small vectors at
# initialisation (std ~ 0.02-0.03), so the gradient through LN_1 of block 1 is ~30x larger
# for that one token. Later blocks see a class token that attention has already mixed.

# %%
de, g_tok = embed_tokens_backward(dz, c_tok)
dimages, g_patch = patch_embed_backward(de, c_patch)
ref_dimages, ref_grads = vit_backward(dlogits, cache)
check("hand-ordered backward == vit_backward", dimages, ref_dimages, 1e-12)
check("dx_class", g_tok["cls_token"], ref_grads["cls_token"], 1e-12)
check("dE", g_patch["weight"], ref_grads["patch_embed.weight"], 1e-12)

# %% [markdown]
# ## The last block needs only the class token
#
# Eq. 4 reads z_L^0 alone, so block L computes 64 rows of z_L that nothing reads. Its keys and
# values must still come from every token of z_{L-1}, but the queries, U_msa, the MLP and both
# residual adds are needed for token 0 only. `vit_forward(..., all_tokens=False)`, which
# training and evaluation use, runs block L that way (`block_forward(..., queries=1)`). That
# saves most of one block's work: 12.6% of the matmul FLOPs at T = 65. The fused U_qkv
# projection still runs for every token, queries included. Logits and gradients stay the same.
# The backward then starts from a (B, 1, D) dz_L, and
# attention's backward carries it to every token of z_{L-1} through the keys and values.

# %%
fast_logits, fast_cache = vit_forward(p, images, cfg, all_tokens=False)
fast_dimages, fast_grads = vit_backward(dlogits, fast_cache)
check("class token only: logits", fast_logits, ref_logits, 1e-12)
check("class token only: dimages", fast_dimages, ref_dimages, 1e-12)
check("class token only: every grad", max(np.abs(fast_grads[k] - ref_grads[k]).max()
                                          for k in ref_grads), 0.0, 1e-12)
print(f"block {L}'s attention map: {attention_maps(fast_cache)[-1].shape} "
      f"(all tokens: {attention_maps(cache)[-1].shape})")

# %% [markdown]
# ## Parameter counts: ViT-B/16, L/16, H/14
#
# > Paper, Table 1: ViT-Base 12 layers, D 768, MLP 3072, 12 heads, 86M params; ViT-Large
# > 24, 1024, 4096, 16, 307M; ViT-Huge 32, 1280, 5120, 16, 632M.
#
# Counted in closed form for an MLP of size M: per block 4D^2 + 4D (attention) + 2DM + M + D
# (MLP) + 4D (two LayerNorms); plus E and its bias, x_class, E_pos, the final LayerNorm
# and a 1000-class head.
# `minivit.count_params` counts the shapes of `param_shapes` instead.


# %%
def closed_form(c):
    D, M, N = c.dim, c.mlp_dim, c.num_patches
    block = 4 * D * D + 4 * D + 2 * D * M + M + D + 4 * D
    return (c.patch_dim * D + D) + D + (N + 1) * D + c.depth * block + 2 * D \
        + D * c.num_classes + c.num_classes


print(f"{'model':<10} {'minivit':>13} {'paper':>6}")
for name, c, paper in (("ViT-B/16", vit_b16(), 86e6), ("ViT-L/16", vit_l16(), 307e6),
                       ("ViT-H/14", vit_h14(), 632e6)):
    n = count_params(c)
    print(f"{name:<10} {n:>13,} {paper / 1e6:>5.0f}M")
    check(f"{name}: count == closed form", n, closed_form(c), 0)
    check_true(f"{name}: within 1% of paper", abs(n - paper) / paper < 0.01,
               f"{100 * (n - paper) / paper:+.2f}%")
print(f"{'CIFAR':<10} {count_params(cfg):>13,}")

# %% [markdown]
# B/16 and H/14 match the paper's rounded figures. For L/16 we count 304.3M (as does timm's
# `vit_large_patch16_224`), 0.9% under the paper's 307M; we have not found where the paper's
# extra ~2.7M come from.
#
# ## End-to-end gradient check
#
# Every parameter tensor and the images, on a small configuration (16x16 images, P=4 so
# N=16, D=16, 2 blocks, 2 heads) so that central differences are quick: random elements of
# each of the 33 tensors.

# %%
small = ViTConfig(image_size=16, patch_size=4, num_classes=5, dim=16, depth=2, heads=2,
                  mlp_dim=32)
ps = {k: v + rng.normal(0, 0.1, v.shape)
      for k, v in init_params(small, seed=1, dtype="float64", zero_head=False).items()}
gradcheck(lambda images, **weights: vit_forward(weights, images, small), vit_backward,
          {"images": rng.standard_normal((2, 3, 16, 16)), **ps}, x_name="images", max_elems=25)

# %% [markdown]
# ## Parity with PyTorch
#
# `tests/torch_vit.py` is a plain PyTorch ViT (nn.Conv2d patch embedding, nn.LayerNorm,
# nn.GELU, autograd) with timm's parameter names; `minivit.io.to_timm_state_dict` converts
# our (in, out) weights and E to its layouts. Same weights, same images, float64: logits and
# every gradient must agree. Skipped (with this message) when torch is not installed.

# %%
try:
    import torch
except ImportError:
    torch = None
    print("torch is not installed: PyTorch parity skipped (pip install torch to run it)")
    check_true("torch present if required", os.environ.get("MINIVIT_REQUIRE_TORCH") != "1",
               "MINIVIT_REQUIRE_TORCH=1 (CI) needs torch")
if torch is not None:
    here = Path(globals().get("__file__", "09_whole_vit.py")).resolve().parent   # lessons/
    spec = importlib.util.spec_from_file_location("torch_vit", here.parent / "tests/torch_vit.py")
    torch_vit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(torch_vit)
    ref = torch_vit.TorchViT(cfg).double()
    ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in to_timm_state_dict(p).items()})
    x = torch.from_numpy(images).requires_grad_(True)
    out = ref(x)
    out.backward(torch.from_numpy(dlogits))
    check("logits vs PyTorch", out.detach().numpy(), ref_logits, 1e-10)
    check("dimages vs PyTorch", x.grad.numpy(), ref_dimages, 1e-8)
    ours = to_timm_state_dict(ref_grads)
    worst = max((np.abs(ours[k] - t.grad.numpy()).max(), k) for k, t in ref.named_parameters())
    check_true("same parameter names", set(ours) == {k for k, _ in ref.named_parameters()},
               f"{len(ours)} tensors")
    check(f"all grads vs PyTorch (worst {worst[1]})", worst[0], 0.0, 1e-8)
finish()
