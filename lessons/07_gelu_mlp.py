# %% [markdown]
# # Lesson 7: GELU and the MLP block
#
# > Paper, section 3.1: "The MLP contains two layers with a GELU non-linearity."
#
# > Paper, eq. (3): z_l = MLP(LN(z'_l)) + z'_l.
#
# The MLP acts on every token separately (no mixing between tokens; that is attention's
# job): D = 128 -> 512 -> 128 for CIFAR, D = 768 -> 3072 -> 768 for ViT-B.
#
# ## GELU, exact and tanh
#
# GELU(x) = x Phi(x), Phi the standard normal CDF (Hendrycks & Gimpel 2016): the input
# scaled by the probability that a standard normal is below it. Like ReLU for large |x|,
# smooth near 0, and slightly negative for x < 0. Phi needs erf:
#
#     exact:  Phi(x) = (1 + erf(x / sqrt 2)) / 2
#     tanh:   Phi(x) ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2
#
# PyTorch's and timm's default is the exact form; the original JAX/Flax ViT code uses the
# tanh approximation. minivit has both (`ViTConfig(gelu="none" | "tanh")`); NumPy has no
# erf, so `minivit/erf.py` implements one (Cody's rational approximations, ~1e-16, used in
# float64).

# %%
import math

import numpy as np

from minivit import ViTConfig, count_params, vit_b16
from minivit.backend import default_rng
from minivit.layers import (
    dropout_forward,
    gelu_backward,
    gelu_forward,
    mlp_backward,
    mlp_forward,
)
from minivit.lesson_utils import check, check_true, finish, gradcheck

grid = np.linspace(-6, 6, 2001)
exact, _ = gelu_forward(grid, "none")
approx, _ = gelu_forward(grid, "tanh")
by_hand = np.array([v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in grid])
check("exact GELU vs x Phi(x), math.erf", exact, by_hand, 1e-15)
gap = np.abs(exact - approx).max()
check_true("tanh form within 1e-3 of exact", 0 < gap < 1e-3, f"max |diff| {gap:.1e}")
print(f"{'x':>5} {'ReLU':>7} {'GELU':>8} {'tanh':>8}")
for v in (-3.0, -1.0, -0.75, 0.0, 0.5, 1.0, 3.0):
    e, a = gelu_forward(np.array([v]))[0][0], gelu_forward(np.array([v]), "tanh")[0][0]
    print(f"{v:5.2f} {max(v, 0.0):7.3f} {e:8.4f} {a:8.4f}")

# %% [markdown]
# The tanh form is the start of an exact identity: Phi(x) = (1 + tanh(g(x))) / 2 holds for
# g(x) = atanh(erf(x / sqrt 2)), an odd function whose series begins sqrt(2/pi) x. In float32,
# minivit computes the *exact* GELU through this identity: seven terms of g (x P(x^2), degree
# 13, fitted to g; `minivit/erf.py`), then one `np.tanh`. No erf and no divide, and Phi is
# within 1e-7 (float32 itself rounds Phi near 1 to ~6e-8).

# %%
from minivit.erf import PHI_TANH_G

x32 = grid.astype(np.float32)
phi_exact = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in grid])
g_fit = sum(c * grid ** (2 * i + 1) for i, c in enumerate(PHI_TANH_G))
check("(1 + tanh(g_fit)) / 2 vs Phi (float64, |x| <= 6)", (1 + np.tanh(g_fit)) / 2, phi_exact,
      1e-7)
check("g's first term: sqrt(2/pi), the tanh form's", PHI_TANH_G[0], math.sqrt(2 / math.pi), 1e-6)
check("float32 exact GELU (tanh of g) vs math.erf", gelu_forward(x32, "none")[0], by_hand, 1e-6)

# %% [markdown]
# The tanh form differs from the exact one by at most ~1e-3 here: a model trained with one
# and run with the other is slightly off, which is why the config records which one.
#
# ## GELU's derivative
#
# Product rule on x Phi(x), with Phi' = phi, the normal density:
#
#     exact:  GELU'(x) = Phi(x) + x phi(x),     phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
#     tanh:   with t = tanh(u), u = sqrt(2/pi) (x + c x^3), Phi ~ (1 + t) / 2:
#             GELU'(x) = Phi + x (1 - t^2) / 2 * sqrt(2/pi) (1 + 3 c x^2)
#
# The backward multiplies the upstream gradient elementwise by GELU'(x), so the forward
# caches x and Phi(x) (the MLP in training on NumPy asks for GELU'(x) itself instead, written
# in the forward's pass: `gelu_forward(..., grad_out=)`, and keeps it with GELU(x)).
# Numerically, on a few tokens of the CIFAR MLP's 512-wide hidden layer:

# %%
rng = np.random.default_rng(0)
h = rng.standard_normal((2, 65, 512)) * 2                  # pre-activations
for mode in ("none", "tanh"):
    print(f"GELU approximate={mode!r}")
    gradcheck(lambda x, mode=mode: gelu_forward(x, mode), gelu_backward, {"x": h[:1, :4].copy()},
              max_elems=300)
phi0 = gelu_backward(np.ones(1), gelu_forward(np.zeros(1))[1])[0]
check("GELU'(0) = Phi(0) = 1/2", phi0, [0.5], 1e-15)

# %% [markdown]
# ## The MLP
#
# MLP(x) = dropout(GELU(x W_1 + b_1) -> dropout) W_2 + b_2, W_1 in R^{D x M}, W_2 in
# R^{M x D}. Dropout (rate p, training only) zeroes each element with probability p and
# scales the survivors by 1/(1 - p), so the expected value is unchanged and nothing needs
# rescaling at test time ("inverted dropout"). The paper pre-trains on ImageNet with
# dropout 0.1 (its Table 3).
#
# Backward, in reverse order: dropout multiplies by the same mask; fc2 gives
# dW_2 = h^T dy, dh = dy W_2^T; GELU multiplies by GELU'(a); fc1 gives dW_1 = x^T da,
# dx = da W_1^T. Biases get the sum of their upstream gradient over all tokens.

# %%
D, M = 128, 512
p = {"fc1.weight": rng.standard_normal((D, M)) / np.sqrt(D), "fc1.bias": rng.normal(0, .1, M),
     "fc2.weight": rng.standard_normal((M, D)) / np.sqrt(M), "fc2.bias": rng.normal(0, .1, D)}
x = rng.standard_normal((2, 65, D))
y, _ = mlp_forward(x, p)
print("MLP:", x.shape, "->", (2, 65, M), "->", y.shape)
y_token, _ = mlp_forward(x[:1, 7:8], p)
check("MLP is per token (token 7 alone)", y_token[0, 0], y[0, 7], 1e-13)
y_eval, _ = mlp_forward(x, p, dropout=0.1, rng=default_rng(0), train=False)
check("dropout is off at test time", y_eval, y, 0.0)
kept, _ = dropout_forward(np.ones((1000, M)), 0.1, default_rng(0), train=True)
print(f"dropout 0.1 on ones: {np.mean(kept == 0):.3f} zeroed, survivors = {kept.max():.4f}")
check("inverted dropout keeps the mean", kept.mean(), 1.0, 0.01)

# %%
n_mlp = 2 * D * M + M + D
cfg = ViTConfig.cifar()
print(f"CIFAR MLP parameters: {n_mlp:,} of {count_params(cfg):,} in the model")
b = vit_b16()
print(f"ViT-B/16 MLPs: {b.depth * (2 * b.dim * b.mlp_dim + b.mlp_dim + b.dim) / 1e6:.1f}M "
      f"of {count_params(b) / 1e6:.1f}M parameters")
print("MLP with dropout 0.1 (the mask fixed by a seeded generator, so the check is exact):")


def mlp_train(x, **weights):
    return mlp_forward(x, weights, 0.1, default_rng(5), train=True)


gradcheck(mlp_train, mlp_backward, {"x": x[:1, :4].copy(), **p}, max_elems=100)
finish()
