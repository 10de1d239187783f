# %% [markdown]
# # Lesson 2: from an image to patches
#
# A Transformer reads a sequence of vectors. ViT makes one from an image by cutting it
# into non-overlapping P x P squares and flattening each.
#
# > Paper, section 3.1: "we reshape the image x in R^{H x W x C} into a sequence of
# > flattened 2D patches x_p in R^{N x (P^2 C)}, where (H, W) is the resolution of the
# > original image, C is the number of channels, (P, P) is the resolution of each image
# > patch, and N = HW/P^2 is the resulting number of patches".
#
# CIFAR: H = W = 32, C = 3, P = 4, so N = 32*32/16 = 64 patches of P^2 C = 48 numbers.

# %%
import numpy as np

from minivit import ViTConfig
from minivit.layers import patch_embed_backward, patch_embed_forward, patchify, unpatchify
from minivit.lesson_utils import check, check_true, finish, gradcheck
from minivit.reference import conv_stride_p_loops, patchify_loops

rng = np.random.default_rng(0)
B, C, H, W, P, D = 2, 3, 32, 32, 4, 128
images = rng.standard_normal((B, C, H, W))        # minivit's layout: (B, C, H, W)
cfg = ViTConfig.cifar()
print("N =", cfg.num_patches, "| P^2 C =", cfg.patch_dim)

# %% [markdown]
# ## patchify: one reshape and one transpose
#
# Split H into (H/P, P) and W into (W/P, P): the array becomes (B, C, h, P, w, P) with
# h = w = 8. Move the two grid axes (h, w) to the front and flatten them into N = 64, and
# flatten (C, P, P) into 48. No number is copied into a new place by arithmetic; the
# patch at grid row r, column c is `images[:, :, rP:(r+1)P, cP:(c+1)P]`, flattened in
# (channel, row, column) order. `minivit.reference.patchify_loops` does exactly that with
# loops, and must agree element for element.

# %%
x_p = patchify(images, P)
print("images", images.shape, "-> x_p", x_p.shape)
check("patchify vs loops", x_p, patchify_loops(images, P), 0.0)
check("unpatchify(patchify(x))", unpatchify(x_p, P, C, H, W), images, 0.0)
r, c = 2, 5                                        # patch number n = r * (W/P) + c
check("patch (2,5) is a 4x4x3 crop", x_p[0, r * 8 + c],
      images[0, :, r * P:(r + 1) * P, c * P:(c + 1) * P].reshape(-1), 0.0)
try:
    ViTConfig(patch_size=5)
except ValueError as e:
    print("P must divide H and W:", e)

# %% [markdown]
# ## The patch embedding is a stride-P convolution
#
# > Paper, eq. (1): z_0 = [x_class; x_p^1 E; x_p^2 E; ...; x_p^N E] + E_pos,
# > E in R^{(P^2 C) x D}.
#
# Each patch row x_p^n (48 numbers) is multiplied by the same matrix E (48 x 128): a
# linear layer applied to every patch. A convolution with a D x C x P x P kernel w and
# stride P computes, at output position (r, c),
#
#     out[d, r, c] = b[d] + sum_{ch, i, j} w[d, ch, i, j] * x[ch, rP + i, cP + j],
#
# the same weighted sum over the same 48 pixels. Because the stride equals the kernel
# size the windows never overlap, so the convolution sees each pixel exactly once. With
# patches flattened in (ch, i, j) order, E[(ch P + i) P + j, d] = w[d, ch, i, j], that is
# E = w.reshape(D, 48).T. (That is also how `minivit.io` converts timm's Conv2d weight.)
#
# Below, the sliding-window sum written out directly, one window at a time
# (`minivit.reference.conv_stride_p_loops`).

# %%
w = rng.standard_normal((D, C, P, P)) * 0.1       # conv kernel, PyTorch layout (out, in, P, P)
b = rng.standard_normal(D) * 0.1


E = np.ascontiguousarray(w.reshape(D, C * P * P).T)  # (48, 128)
e, cache = patch_embed_forward(images, E, b, P)     # (B, N, D)
print("x_p E + b:", e.shape)
for i in range(B):
    conv = conv_stride_p_loops(images[i], w, b, P)                          # (D, 8, 8)
    check(f"conv == x_p E, image {i}", conv.reshape(D, -1).T, e[i], 1e-12)

# %% [markdown]
# ## Backward
#
# With e = x_p E + b and an upstream gradient de = dL/de of shape (B, N, D):
#
# * dL/dE = sum over images and patches of x_p^T de: (48, B N) @ (B N, 128) -> (48, 128).
#   Every patch uses the same E, so every patch contributes to its gradient.
# * dL/db = the sum of de over images and patches.
# * dL/dx_p = de E^T (B, N, 48); the pixels' gradient puts each row back where its patch
#   came from: dL/dimages = unpatchify(de E^T). Since patches do not overlap, no pixel
#   receives two contributions (a stride < P convolution would need them added).
#
# `patch_embed_backward` is exactly these three lines (via `linear_backward`).

# %%
de = rng.standard_normal(e.shape)
dimages, grads = patch_embed_backward(de, cache)
x2 = x_p.reshape(-1, C * P * P)
check("dE == x_p^T de", grads["weight"], x2.T @ de.reshape(-1, D), 1e-10)
check("dimages == unpatchify(de E^T)", dimages, unpatchify(de @ E.T, P, C, H, W), 1e-12)

# %% [markdown]
# Finally the numerical check: central differences in float64 on random elements of the
# image, E and b, against `patch_embed_backward`.

# %%
gradcheck(lambda images, weight, bias: patch_embed_forward(images, weight, bias, P),
          patch_embed_backward, {"images": images[:1], "weight": E, "bias": b},
          x_name="images", max_elems=300)
check_true("conv shapes", e.shape == (B, 64, 128), f"e {e.shape}")
finish()
