# %% [markdown]
# # Lesson 4: LayerNorm (and how it differs from BatchNorm)
#
# > Paper, section 3.1: "Layernorm (LN) is applied before every block, and residual
# > connections after every block".
#
# LayerNorm (Ba et al. 2016) normalises each token on its own, over its D features:
#
#     mu = mean_d x_d,   var = mean_d (x_d - mu)^2,   xhat = (x - mu) / sqrt(var + eps),
#     y = gamma * xhat + beta,          gamma, beta in R^D learned.
#
# BatchNorm normalises each *feature* over the batch (and, for sequences, over positions).
# On the token tensor z of shape (B, T, D) = (8, 65, 128) the difference is only the axes
# the mean and variance are taken over:

# %%
import numpy as np

from minivit.conv import batchnorm2d_forward
from minivit.layers import layernorm_backward, layernorm_forward
from minivit.lesson_utils import check, check_true, finish, gradcheck
from minivit.reference import layernorm_loops

rng = np.random.default_rng(0)
B, T, D = 8, 65, 128
z = rng.standard_normal((B, T, D)) * 3.0 + rng.standard_normal(D)     # features of mixed scale

ln_mu = z.mean(axis=-1, keepdims=True)              # LayerNorm: one mean per token
bn_mu = z.mean(axis=(0, 1), keepdims=True)          # BatchNorm: one mean per feature
print("LayerNorm statistics:", ln_mu.shape, "(per token)")
print("BatchNorm statistics:", bn_mu.shape, "(per feature, over batch and positions)")

# %% [markdown]
# Consequences:
#
# * LN treats every token identically at training and test time; its output for one image
#   does not depend on what else is in the batch. BN's does, and BN needs running averages
#   for inference. No BatchNorm layer is needed anywhere in ViT.
# * After LN each token has mean 0 and variance 1 (before gamma, beta); after BN each
#   feature column has.
#
# We check all this with minivit's `layernorm_forward` (gamma = 1, beta = 0 to see xhat),
# and compare it with the one-token-at-a-time loop in `minivit.reference`.

# %%
ones, zeros = np.ones(D), np.zeros(D)
y, cache = layernorm_forward(z, ones, zeros)
check("LN token means = 0", y.mean(-1), np.zeros((B, T)), 1e-12)
check("LN token variances = 1", y.var(-1), np.ones((B, T)), 1e-5)
check("LN vs per-token loop", y, layernorm_loops(z, ones, zeros), 1e-12)
y_alone, _ = layernorm_forward(z[:1], ones, zeros)
check("LN(image 0) alone == in batch", y_alone, y[:1], 0.0)


def batchnorm_tokens(z):
    """minivit's BatchNorm (training mode) on tokens: features as channels, (B, D, T, 1)."""
    D = z.shape[-1]
    y, _ = batchnorm2d_forward(z.transpose(0, 2, 1)[..., None], np.ones(D), np.zeros(D),
                               np.zeros(D), np.ones(D), train=True, eps=1e-6)
    return y[..., 0].transpose(0, 2, 1)                                 # back to (B, T, D)


bn, bn_alone = batchnorm_tokens(z), batchnorm_tokens(z[:1])
check("BN feature means = 0 (over batch and tokens)", bn.mean((0, 1)), np.zeros(D), 1e-12)
check("BN: z = bn * sd + bn_mu", (bn * np.sqrt(z.var((0, 1)) + 1e-6) + bn_mu)[0], z[0], 1e-12)
changed = np.abs(bn_alone - bn[:1]).max()
check_true("BN(image 0) depends on batch", changed > 1e-2, f"max change {changed:.3f}")

# %% [markdown]
# ## The backward in three terms
#
# Take one token (drop the token index). Let g = dL/dy * gamma, the gradient arriving at
# xhat. With r = 1 / sqrt(var + eps):
#
#     dxhat_i / dx_j = r (delta_ij - 1/D - xhat_i xhat_j / D).
#
# The three pieces: delta_ij is the direct path (x_j -> xhat_j); -1/D is through the mean
# (every x_j moves mu by 1/D); -xhat_i xhat_j / D is through the variance
# (d var / d x_j = 2 (x_j - mu) / D, and d r / d var = -r^3 / 2). Apply this Jacobian
# (it is symmetric) to g:
#
#     dL/dx = r (g - mean(g) - xhat * mean(g * xhat))            (means over D)
#
# and the parameters: dL/dgamma = sum over tokens of dL/dy * xhat, dL/dbeta = sum of dL/dy.
#
# Check the formula against the explicit D x D Jacobian for one token:

# %%
gamma, beta = rng.standard_normal(D), rng.standard_normal(D)
y, cache = layernorm_forward(z, gamma, beta)
dy = rng.standard_normal(z.shape)
dz, grads = layernorm_backward(dy, cache)
xhat, _, r = cache
xh, rr = xhat[3, 7], r[3, 7, 0]                                   # token 7 of image 3
J = rr * (np.eye(D) - 1.0 / D - np.outer(xh, xh) / D)            # dxhat / dx
check("three terms == J^T (dy * gamma)", dz[3, 7], J.T @ (dy[3, 7] * gamma), 1e-12)
check("dgamma = sum dy * xhat", grads["weight"], (dy * xhat).sum((0, 1)), 1e-10)
check("dbeta = sum dy", grads["bias"], dy.sum((0, 1)), 1e-10)

# %% [markdown]
# Two properties fall out of the three terms. The input gradient of every token sums to
# zero over D (LN's output does not change when the same constant is added to all of a
# token's features), and it is orthogonal to xhat (nor when a token is scaled; exactly so
# for eps = 0, here up to a factor eps / (var + eps) ~ 1e-7). So with
# gamma = 1 an upstream gradient of all ones gives dx = 0 exactly: a gradient check that
# uses L = sum(y) would pass a backward that returns zeros. That is why `minivit.gradcheck`
# uses L = sum(y * G) with a random G.

# %%
check("sum_d dL/dx_d = 0", dz.sum(-1), np.zeros((B, T)), 1e-10)
check("dL/dx . xhat = 0 (up to eps)", (dz * xhat).sum(-1), np.zeros((B, T)), 1e-5)
dz_ones, _ = layernorm_backward(np.ones_like(z), (xhat, ones, r))
check("dy = 1, gamma = 1 -> dx = 0", dz_ones, np.zeros_like(z), 1e-12)

# %% [markdown]
# ## Numerical check (float64, central differences, random G)
#
# On a few tokens (2 images x 5 tokens x 128 features): the finite-difference noise grows
# with the size of the summed loss, so small inputs give the sharpest check.

# %%
gradcheck(lambda x, weight, bias: layernorm_forward(x, weight, bias),
          layernorm_backward, {"x": z[:2, :5].copy(), "weight": gamma, "bias": beta}, max_elems=300)
finish()
