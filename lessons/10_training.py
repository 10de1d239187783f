# %% [markdown]
# # Lesson 10: training
#
# > Paper, section 4.1: "We train all models, including ResNets, using Adam with
# > beta_1 = 0.9, beta_2 = 0.999, a batch size of 4096 and apply a high weight decay of 0.1
# > [...]. We use a linear learning rate warmup and decay".
#
# Lessons 2-9 computed dL/dtheta for every parameter. Training needs three more things: the
# loss L itself (cross-entropy, here with label smoothing), an optimiser that turns gradients
# into steps (AdamW), and a learning-rate schedule (warmup, then cosine decay). We check
# each, overfit one batch, then train on real CIFAR-10 for a few hundred steps.
# `MINIVIT_LESSON_QUICK=1` shortens that run; without the data the lesson says where to get
# it and exits 0.

# %%
import math
import os
import time

import numpy as np

from minivit import ViTConfig, cross_entropy, init_params, vit_backward, vit_forward
from minivit.backend import default_rng
from minivit.data import AugmentConfig, load_cifar10, train_batch
from minivit.lesson_utils import check, check_true, finish, gradcheck
from minivit.optim import adamw_init, adamw_step, clip_grad_norm, cosine_lr, no_weight_decay
from minivit.progressive import at_resolution, shrink_images
from minivit.recipes import TrainConfig
from minivit.train import evaluate, train_step

QUICK = os.environ.get("MINIVIT_LESSON_QUICK") == "1"
rng = np.random.default_rng(0)

# %% [markdown]
# ## Cross-entropy with label smoothing
#
# The head gives K = 10 logits; p = softmax(logits). With a target distribution t,
#
#     L = -sum_k t_k log p_k,      dL/dlogit_j = p_j - t_j      (since sum_k t_k = 1).
#
# One-hot t says "class y, certainly"; the loss then keeps pushing logit_y up forever.
# Label smoothing (Szegedy et al. 2016) mixes in the uniform distribution,
# t = (1 - eps) onehot(y) + eps / K, so the best p is t itself, reached at finite logits,
# and the smallest possible loss is the entropy of t instead of 0. The batch loss is the
# mean over B, so `cross_entropy` returns dlogits = (p - t) / B.

# %%
K, eps = 10, 0.1
logits = rng.standard_normal((4, K)) * 3
labels = np.array([3, 0, 9, 3])
loss, dlogits = cross_entropy(logits, labels, label_smoothing=eps)
t = np.full((4, K), eps / K)
t[np.arange(4), labels] += 1 - eps
logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
check("L = -mean_b sum_k t log p", loss, -(t * logp).sum() / 4, 1e-14)
check("dL/dlogits = (p - t) / B", dlogits, (np.exp(logp) - t) / 4, 1e-15)
best, _ = cross_entropy(np.log(t), labels, eps)
check("min loss = entropy of t, at p = t", best, -(t * np.log(t)).sum() / 4, 1e-14)
print(f"one-hot: L -> 0 only as logits -> inf; smoothed ({eps}): L >= {float(best):.4f}")


def ce_forward(logits):
    loss, d = cross_entropy(logits, labels, eps)
    return loss.reshape(1), d


gradcheck(ce_forward, lambda G, d: (d * G[0], {}), {"logits": logits}, x_name="logits")

# %% [markdown]
# ## AdamW
#
# Adam keeps running means of the gradient g and of g^2 per parameter, m and v, corrects
# their start-up bias, and steps by m^ / (sqrt(v^) + eps): each parameter gets its own step
# size, about lr, whatever the scale of its gradient. At step 1, m^ = g and v^ = g^2, so the
# step is lr g / (|g| + eps): every parameter moves by almost exactly lr.
#
# Weight decay "W" (Loshchilov & Hutter 2019) is *decoupled*: p <- p - lr lambda p, applied
# to p directly. Adding lambda p to the gradient instead (L2 regularisation) would send it
# through m and v, where dividing by sqrt(v^) shrinks the decay of exactly the parameters
# with large gradients. Biases, LayerNorm scales, E_pos and the class token are not
# decayed (`minivit.optim.no_weight_decay`).

# %%
p0 = {"blocks.0.mlp.fc1.weight": rng.standard_normal((3, 4)), "blocks.0.mlp.fc1.bias":
      rng.standard_normal(4)}
g0 = {k: rng.standard_normal(v.shape) for k, v in p0.items()}
params1 = {k: v.copy() for k, v in p0.items()}
state = adamw_init(params1)
lr, wd = 0.01, 0.05
adamw_step(params1, g0, state, lr, weight_decay=wd)
for name, w in p0.items():
    decay = 0.0 if no_weight_decay(name) else wd
    want = w * (1 - lr * decay) - lr * g0[name] / (np.abs(g0[name]) + 1e-8)
    check(f"step 1 of {name.split('.')[-1]}", params1[name], want, 1e-12)
names = init_params(ViTConfig.cifar(depth=1)).keys()
print("not decayed:", ", ".join(n for n in names if no_weight_decay(n)))

# %% [markdown]
# ## Warmup and cosine decay; gradient clipping
#
# Adam's v^ is a poor estimate during the first steps, and a large step then can throw a
# Transformer into a bad region; so the learning rate rises linearly over the warmup
# steps, then follows half a cosine down to min_lr. Clipping rescales all gradients together
# when their global norm exceeds a threshold (1.0 here), a guard against rare huge steps.

# %%
total, warm, base = 100, 10, 1e-3
lrs = [cosine_lr(s, total, base, warm) for s in range(total + 1)]
print("step:", *[f"{s:>7d}" for s in (0, 5, 9, 10, 30, 55, 80, 99, 100)])
print("lr:  ", *[f"{lrs[s]:7.1e}" for s in (0, 5, 9, 10, 30, 55, 80, 99, 100)])
check("warmup reaches base_lr", lrs[warm - 1], base, 1e-18)
check("halfway down the cosine", lrs[55], base / 2, 1e-18)
check_true("decreasing after warmup", bool(np.all(np.diff(lrs[warm:]) <= 0)), "monotone")
check("ends at min_lr", lrs[total], 0.0, 0.0)
grads = {"a": np.full(3, 4.0), "b": np.full(1, 3.0)}                 # norm sqrt(48 + 9)
norm = clip_grad_norm(grads, 1.0)
after = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
check("clip: norm before", norm, math.sqrt(57.0), 1e-12)
check("clip: norm after = 1", after, 1.0, 1e-6)

# %% [markdown]
# ## One training step, and overfitting one batch
#
# A step is five calls: forward, loss, backward, clip, AdamW. `minivit.train.train_step`
# computes exactly that; we do it by hand once and compare. (train_step folds the clip into the
# update: `adamw_step(..., clip_norm=1.0)` takes `clip_scale(g, 1.0)[0]` as its grad_scale and
# multiplies each gradient by it inside AdamW, one pass fewer, the same numbers. With NumPy
# on several cores train_step may run one share of the batch per core and sum the shares'
# gradients, which is the batch's gradient because backward is linear in dlogits:
# minivit/data_parallel.py. The sums then round differently, so the two agree to float32
# rounding, not to the bit.) Then the first sanity
# check of any training code: a model must be able to memorise 16 images with random labels.
# If the loss does not go to ~0, something in the gradients or the optimiser is wrong.
#
# For speed on a CPU this uses a smaller model than lessons 2-9: D = 64, 2 blocks, 2 heads.

# %%
cfg = ViTConfig.cifar(dim=64, depth=2, heads=2, mlp_dim=128)
tc = TrainConfig(label_smoothing=0.0, weight_decay=0.0, clip_norm=1.0)
x = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
y = rng.integers(0, 10, 16)
params = init_params(cfg, seed=0)
hand = {k: v.copy() for k, v in params.items()}
opt, opt_hand = adamw_init(params), adamw_init(hand)
logits, cache = vit_forward(hand, x, cfg, train=True, all_tokens=False)  # 1 forward (lesson 9)
loss0, dlogits = cross_entropy(logits, y, tc.label_smoothing)          # 2 loss
_, g = vit_backward(dlogits, cache)                                    # 3 backward
clip_grad_norm(g, tc.clip_norm)                                        # 4 clip
adamw_step(hand, g, opt_hand, 1e-3, weight_decay=tc.weight_decay)      # 5 update
train_step(params, opt, x, y, cfg, tc, 1e-3, default_rng(0))
check("hand step == train_step", max(np.abs(hand[k] - params[k]).max() for k in params), 0,
      1e-7)
check("first loss = ln 10 (zero head)", loss0, math.log(10), 1e-6)
t0 = time.perf_counter()
for s in range(1, 80):
    loss, correct = train_step(params, opt, x, y, cfg, tc, 3e-3, default_rng(s))
print(f"after 80 steps: loss {loss:.4f}, {correct}/16 right ({time.perf_counter() - t0:.1f} s)")
check_true("one batch memorised", loss < 0.05 and correct == 16, f"loss {loss:.4f}")

# %% [markdown]
# ## Progressive resizing: cheaper epochs on smaller images
#
# A step's cost grows with the token count T = 1 + (H/P)^2: on images shrunk to 16 px the
# P = 4 model has T = 17 instead of 65, and a step costs about a quarter. `train_cifar.py`'s
# CPU recipe spends its first epochs there (then 24 px, then 32 px) and gets more epochs out
# of its hour. The parameters stay the 32 px model's: E does not depend on the image size, and
# E_pos's 8 x 8 grid G is area-averaged onto the 4 x 4 grid (each small patch covers 2 x 2
# full-size ones), the class token's row kept: G' = M_h G M_w^T, a linear map whose gradient
# is its adjoint, dG = M_h^T dG' M_w. The images shrink the same way (the mean of 2 x 2 pixels).

# %%
small_x = shrink_images(x[:2], 16)
check("shrunk image = mean of 2x2 pixels", small_x,
      x[:2].reshape(2, 3, 16, 2, 16, 2).mean(axis=(3, 5)), 1e-6)
p16, cfg16, pull_back = at_resolution(params, cfg, 16)
grid = params["pos_embed"][0, 1:].reshape(8, 8, -1)
check("E_pos' patch rows = 2x2 means of G", p16["pos_embed"][0, 1:].reshape(4, 4, -1),
      grid.reshape(4, 2, 4, 2, -1).mean(axis=(1, 3)), 1e-6)
print(f"z0 at 16 px: {cfg16.num_tokens} x {cfg16.dim} (at 32 px: {cfg.num_tokens} x {cfg.dim})")
tiny = ViTConfig(image_size=8, patch_size=2, num_classes=3, dim=8, depth=1, heads=2, mlp_dim=16)
p64 = init_params(tiny, seed=1, dtype="float64")
p64["head.weight"] = rng.standard_normal(p64["head.weight"].shape)
x6 = rng.standard_normal((2, 3, 6, 6))                  # 8 px model on 6 px images: 3x3 grid


def forward_at_6px(pos_embed):
    small, small_cfg, back = at_resolution({**p64, "pos_embed": pos_embed}, tiny, 6)
    logits, c = vit_forward(small, x6, small_cfg)
    return logits, (c, back)


gradcheck(forward_at_6px, lambda G, c: (None, c[1](vit_backward(G, c[0], False)[1])),
          {"pos_embed": p64["pos_embed"].copy()}, x_name="none")

# %% [markdown]
# ## A short real run on CIFAR-10
#
# The same step on real images: random crops and flips (`minivit.data`), label smoothing
# 0.1, weight decay 0.05, warmup then cosine, on a subset of the training set; accuracy on
# held-out test images. A few hundred steps of this small model reach well above the 10% of
# guessing, nowhere near a trained model: `train_cifar.py` trains the full CIFAR model
# (D = 128, 6 blocks) for much longer.

# %%
try:
    x_tr, y_tr, x_te, y_te = load_cifar10(download_ok=False)
except FileNotFoundError as e:
    print(f"CIFAR-10 is not available, so the real run is skipped:\n  {e}\n"
          "  (This project's offline copy: python ../shared/data/cifar10/build.py DIR, then "
          "MINIVIT_DATA=DIR.)")
    finish()
    raise SystemExit(0) from None
steps, batch, n_test = (40, 64, 500) if QUICK else (300, 64, 2000)
tc = TrainConfig(label_smoothing=0.1, weight_decay=0.05, clip_norm=1.0, eval_batch_size=500)
params, order = init_params(cfg, seed=0), rng.permutation(10000)      # the first 10k images
opt = adamw_init(params)
before, _ = evaluate(params, cfg, x_te[:n_test], y_te[:n_test], tc)
t0, losses = time.perf_counter(), []
for s in range(steps):
    idx = order[(s * batch) % 10000:][:batch]
    xb, yb = train_batch(x_tr[idx], y_tr[idx], default_rng(s), AugmentConfig(), 10)
    lr = cosine_lr(s, steps, 2e-3, steps // 10)
    losses.append(train_step(params, opt, xb, yb, cfg, tc, lr, default_rng(s))[0])
    if s % (steps // 5) == 0 or s == steps - 1:
        print(f"step {s:4d}  lr {lr:.1e}  loss {np.mean(losses[-20:]):.3f}")
test_loss, acc = evaluate(params, cfg, x_te[:n_test], y_te[:n_test], tc)
print(f"{steps} steps in {time.perf_counter() - t0:.0f} s: test loss {before:.3f} -> "
      f"{test_loss:.3f}, accuracy {100 * acc:.1f}% on {n_test} test images")
check_true("training loss went down", np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.1,
           f"{np.mean(losses[:10]):.3f} -> {np.mean(losses[-10:]):.3f}")
check_true("better than guessing", acc > (0.15 if QUICK else 0.25), f"{100 * acc:.1f}%")
finish()
