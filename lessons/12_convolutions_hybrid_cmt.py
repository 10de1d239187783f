# %% [markdown]
# # Lesson 12: convolutions by hand, the hybrid ViT and CMT
#
# The ViT paper's *hybrid* model feeds a CNN feature map to the transformer, and CMT (Guo et
# al., CVPR 2022) puts depthwise convolutions inside every transformer block. Both need
# convolution layers, and minivit writes them the same way as everything else: a
# `*_forward(...) -> (out, cache)` and `*_backward(dout, cache) -> (dx, grads)` pair.
#
# Three ideas carry this lesson:
# 1. **im2col**: a convolution is a matrix product once each k x k window is a row.
# 2. **BatchNorm's backward**: the batch statistics depend on the input, which adds two terms.
# 3. **The CMT block**: LPU, lightweight attention with reduced keys and a learned bias, IRFFN.
#
# Every claim ends in a numeric check; the script exits non-zero if one fails.

# %%

import numpy as np

from minivit.cmt import CMTConfig, cmt_cifar, cmt_s, cmt_ti, count_cmt_params
from minivit.cmt.attention import lmhsa_backward, lmhsa_forward
from minivit.cmt.params import block_shapes
from minivit.conv import (
    batchnorm2d_backward,
    batchnorm2d_forward,
    col2im,
    conv2d_backward,
    conv2d_forward,
    im2col,
)
from minivit.gradcheck import check_gradients
from minivit.hybrid import HybridConfig, count_hybrid_params
from minivit.layers.patch import patch_embed_forward
from minivit.lesson_utils import check_true, finish


def as_dict(backward, **names):
    """backward(G, cache) -> (dx, grads) as the {input name: gradient} dict check_gradients
    wants; names maps an input's name to its key in grads."""
    def bw(G, cache):
        dx, grads = backward(G, cache)
        return {"x": dx, **{name: grads[key] for name, key in names.items()}}
    return bw


rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. im2col: a convolution is one matrix product
#
# A 2-D convolution with C_out filters W (C_out, C_in, k, k), stride s and padding p:
#
#     y[b, o, r, c] = sum_{ch, i, j} W[o, ch, i, j] xpad[b, ch, s r + i, s c + j] + b[o]
#
# For one output pixel (r, c) the sum runs over one k x k x C_in window of the input. Copy
# every window into a row (that is im2col) and the sum is a dot product with the flattened
# filter: `cols (B, Ho Wo, C_in k k) @ W.reshape(C_out, -1).T`. minivit fills `cols` with a
# loop over the k^2 kernel taps only: tap (i, j) of every window, across the whole batch and
# all channels, is one strided slice `xpad[:, :, i::s, j::s]`.

# %%
x = rng.standard_normal((2, 3, 5, 5))
cols = im2col(x, k=3, stride=1, padding=1)
print("x", x.shape, "-> cols", cols.shape, "= (B, Ho*Wo, C*k*k) = (2, 25, 27)")
# The window of output pixel (0, 0) covers rows/cols -1..1 of x; padding makes row/col -1 zero.
window = np.zeros((3, 3, 3))
window[:, 1:, 1:] = x[0, :, :2, :2]
check_true("row 0 of cols is the (padded) window at (0, 0)",
           np.array_equal(cols[0, 0], window.ravel()))

# %% [markdown]
# **Backward.** With y = cols W2 (W2 = W.reshape(C_out, -1).T), the linear layer's backward
# gives dW2 = cols^T dy and dcols = dy W2^T. Each entry of `cols` is a copy of one input
# pixel, so dx is the sum of the dcols entries that copied it: **col2im is a scatter-add**,
# the adjoint (transpose) of im2col. Overlapping windows (k > s) make some pixels appear in
# several rows, and their gradients add. `col2im(ones)` therefore counts, for every pixel,
# how many windows cover it: 9 in the interior of a 3x3 stride-1 conv, 4 in a corner.

# %%
coverage = col2im(np.ones_like(cols), x.shape, 3, 1, 1)[0, 0]
print(coverage.astype(int))
check_true("col2im(ones) counts windows: 9 inside, 6 on edges, 4 in corners",
      coverage[2, 2] == 9 and coverage[0, 2] == 6 and coverage[0, 0] == 4)
c = rng.standard_normal(cols.shape)
lhs, rhs = (cols * c).sum(), (x * col2im(c, x.shape, 3, 1, 1)).sum()
check_true("<im2col(x), c> = <x, col2im(c)> (adjoint)", np.isclose(lhs, rhs, rtol=1e-12),
      f"{lhs:.6f} vs {rhs:.6f}")

# %% [markdown]
# **When k == s and p == 0** the windows tile the image without overlap: im2col is a pure
# reshape, exactly ViT's patchify, and col2im its inverse. So the ViT patch embedding x_p E
# *is* a stride-P convolution with E = W.reshape(D, -1).T, and conv2d takes that reshape path.

# %%
P, D = 4, 8
img = rng.standard_normal((2, 3, 16, 16))
W, b = rng.standard_normal((D, 3, P, P)), rng.standard_normal(D)
y_conv, _ = conv2d_forward(img, W, b, stride=P)                  # (2, D, 4, 4)
e, _ = patch_embed_forward(img, W.reshape(D, -1).T, b, P)        # (2, 16, D)
check_true("stride-P conv == ViT patch embedding",
      np.allclose(y_conv.reshape(2, D, 16).transpose(0, 2, 1), e, atol=1e-12))
rep = check_gradients(lambda x, w: conv2d_forward(x, w, None, 2, 1),
                      as_dict(conv2d_backward, w="weight"),
                      {"x": rng.standard_normal((2, 3, 7, 6)),
                       "w": rng.standard_normal((4, 3, 3, 3))})
worst = max(r[0] for r in rep.values())
check_true("conv2d 3x3 stride 2 backward vs finite differences", worst < 1e-7, f"rel {worst:.1e}")

# %% [markdown]
# ## 2. BatchNorm2d and its backward
#
# Per channel, over the M = B H W values of the batch:
#
#     mu = mean(x),  var = mean((x - mu)^2),  xhat = (x - mu) / sqrt(var + eps)
#     y = gamma xhat + beta
#
# In **training** mu and var are functions of x. Write g = dL/dxhat = dy gamma. The direct
# path gives g / sqrt(var + eps); through mu every x moves all of xhat, giving -mean(g); through
# var, -xhat mean(g xhat). Together (means over the M values of the channel):
#
#     dx = rstd (g - mean(g) - xhat mean(g xhat)),   rstd = 1 / sqrt(var + eps)
#
# the same three terms as LayerNorm, over (B, H, W) instead of the feature axis. The two
# subtracted terms are projections: dx has zero mean and is orthogonal to xhat in each
# channel (up to eps), because shifting or scaling a channel's inputs does not change its
# output.
#
# In **eval** mode mu and var are the running statistics, constants, so dx = rstd g.
# The running statistics follow PyTorch: momentum 0.1 and the *unbiased* variance
# var M / (M - 1). They are buffers, not parameters: minivit keeps them in a separate `state`
# dict, which training updates in place, eval reads and checkpoints save.

# %%
C = 3
x = rng.standard_normal((4, C, 3, 3)) * 2 + 1
gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
rm, rv = np.zeros(C), np.ones(C)
y, cache = batchnorm2d_forward(x, gamma, beta, rm, rv, train=True)
dx, grads = batchnorm2d_backward(rng.standard_normal(x.shape), cache)
xhat = cache[0]
check_true("train dx has zero mean per channel", np.abs(dx.mean(axis=(0, 2, 3))).max() < 1e-12)
cosine = (dx * xhat).sum(axis=(0, 2, 3)) / np.sqrt((dx ** 2).sum(axis=(0, 2, 3))
                                                   * (xhat ** 2).sum(axis=(0, 2, 3)))
check_true("train dx is orthogonal to xhat per channel (up to eps / var)",
      np.abs(cosine).max() < 1e-4, f"cosines {np.abs(cosine).max():.1e}")
M = 4 * 3 * 3
check_true("running_var took 0.1 of the unbiased variance",
      np.allclose(rv, 0.9 + 0.1 * x.var(axis=(0, 2, 3)) * M / (M - 1)))
for train in (True, False):
    rep = check_gradients(
        lambda x, gamma, beta, train=train: batchnorm2d_forward(x, gamma, beta, rm.copy(),
                                                                rv.copy(), train),
        as_dict(batchnorm2d_backward, gamma="weight", beta="bias"),
        {"x": x, "gamma": gamma, "beta": beta})
    worst = max(r[0] for r in rep.values())
    check_true(f"BatchNorm backward ({'train' if train else 'eval'}) vs finite differences",
          worst < 1e-7, f"rel {worst:.1e}")

# %% [markdown]
# ## 3. The hybrid ViT
#
# A small BN conv stem (3 -> 32 stride 1, -> 64 stride 2, -> 128 stride 2) turns a 32 px image
# into an 8x8 map of 128 channels; each of the 64 positions is a token, embedded by a 1x1
# "patch" projection E (128 x D). The rest is minivit's ViT unchanged (it literally calls
# `vit_forward` with patch size 1). The paper's hybrids use a BiT ResNet with GroupNorm and
# weight standardisation; this stem uses BatchNorm.

# %%
hcfg = HybridConfig()
print("hybrid: feature map", hcfg.feature_size, "x", hcfg.feature_size, "->", hcfg.vit.num_tokens,
      "tokens;", f"{count_hybrid_params(hcfg):,} parameters")
check_true("hybrid encoder sees 64 patch tokens + class token", hcfg.vit.num_tokens == 65)

# %% [markdown]
# ## 4. The CMT block
#
# On tokens X (N = H W of them, D channels):
#
#     Y  = LPU(X) = DWConv3x3(X) + X                   local perception: a depthwise 3x3 conv
#     Z  = LMHSA(LN(Y)) + Y
#     X' = IRFFN(LN(Z)) + Z                            1x1 expand, depthwise 3x3 (+ shortcut), 1x1
#
# **LMHSA** attends from all N queries to N / k^2 keys: a k x k stride-k depthwise conv (+BN)
# shrinks the map before K and V are computed, and a learned bias B (heads, N, N / k^2) is
# added to the scaled scores: A = softmax(q k^T / sqrt(D_h) + B). The cost of the score matrix
# drops by k^2. One B is shared by all blocks of a stage, so its gradient is the sum of the
# blocks' dB = sum_batch dS.
#
# **Why a CIFAR variant.** At 32 px the paper's stem (stride 2) and stage strides leave maps of
# 8, 4, 2, 1 tokens per side, and k = (8, 4, 2, 1) reduces every stage to **one key**. A softmax
# over one key is 1 whatever the scores: attention becomes a constant copy of v, and B receives
# no gradient at all. `cmt_cifar` uses stem stride 1 and k = (4, 2, 1, 1): 16, 16, 16 and 4 keys.

# %%
paper32 = cmt_ti(image_size=32)
print("CMT-Ti at 32 px, keys per stage:", [paper32.num_keys(i) for i in range(4)])
print("cmt_cifar, keys per stage:      ", [cmt_cifar().num_keys(i) for i in range(4)])


def lmhsa_dB(cfg: CMTConfig, stage):
    """dB of a one-block LMHSA on random tokens of `stage` (tiny widths, cfg's geometry)."""
    D, heads, k = 4, 2, cfg.sr_ratios[stage]
    N, Nk, side = cfg.num_tokens(stage), cfg.num_keys(stage), cfg.stage_side(stage)
    p = {n[5:]: rng.standard_normal(s) for n, s in block_shapes(D, 4, k).items()
         if n.startswith("attn.")}
    state = {n[:-6] + "running_mean": np.zeros(D) for n in p if n.endswith("1.weight")}
    state.update({n[:-4] + "var": np.ones(D) for n in state})
    out, c = lmhsa_forward(rng.standard_normal((2, N, D)), p, state,
                           rng.standard_normal((heads, N, Nk)), (side, side), heads, k, train=True)
    return lmhsa_backward(rng.standard_normal(out.shape), c)[1]["relative_pos"], c["attn"]


dB1, A1 = lmhsa_dB(paper32, 0)
dB4, A4 = lmhsa_dB(cmt_cifar(), 0)
check_true("paper strides at 32 px: A == 1 and dB == 0",
      np.allclose(A1, 1) and np.abs(dB1).max() < 1e-12, f"A {A1.shape}")
check_true("CIFAR variant: B gets a gradient", np.abs(dB4).max() > 1e-3, f"A {A4.shape}")

# %% [markdown]
# **Parameter counts** come from the same shape function the model allocates with; the
# official code (huawei-noah/Efficient-AI-Backbones, cmt_pytorch) has CMT-Ti 9.49M at 160 px
# and CMT-S 26.26M at 224 px (the paper's table prints 25.14M for S).

# %%
for name, cfg, official in (("CMT-Ti", cmt_ti(), 9.49e6), ("CMT-S", cmt_s(), 26.26e6)):
    n = count_cmt_params(cfg)
    check_true(f"{name} has {n / 1e6:.3f}M parameters, official {official / 1e6:.2f}M",
          abs(n - official) / official < 1e-3)

# %%
finish()
