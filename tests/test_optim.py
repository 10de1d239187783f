"""Optimiser steps against values computed by hand."""
import math

import numpy as np
import pytest

from minivit.optim import (
    adamw_init,
    adamw_step,
    clip_grad_norm,
    clip_scale,
    cosine_lr,
    no_weight_decay,
    sgd_init,
    sgd_step,
)


def test_no_weight_decay_names():
    for name in ("pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.3.attn.qkv.bias",
                 "norm.weight", "norm.bias", "head.bias"):
        assert no_weight_decay(name), name
    for name in ("patch_embed.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight",
                 "head.weight"):
        assert not no_weight_decay(name), name


def test_adamw_two_steps_by_hand():
    w = np.array([1.0, -2.0])
    params = {"fc.weight": w.copy(), "fc.bias": np.array([0.5])}
    state = adamw_init(params)
    lr, b1, b2, eps, wd = 0.1, 0.9, 0.999, 1e-8, 0.5
    g1, g2 = np.array([0.2, -0.4]), np.array([0.1, 0.3])
    adamw_step(params, {"fc.weight": g1, "fc.bias": np.array([1.0])}, state, lr, (b1, b2), eps, wd)
    # step 1: m^ = g, v^ = g^2, so the Adam part is lr * g / (|g| + eps) = lr * sign(g)
    w1 = w * (1 - lr * wd) - lr * g1 / (np.abs(g1) + eps)
    np.testing.assert_allclose(params["fc.weight"], w1, rtol=1e-12)
    np.testing.assert_allclose(params["fc.bias"], [0.5 - lr * 1.0 / (1.0 + eps)])  # no decay
    adamw_step(params, {"fc.weight": g2, "fc.bias": np.array([1.0])}, state, lr, (b1, b2), eps, wd)
    m = b1 * (1 - b1) * g1 + (1 - b1) * g2
    v = b2 * (1 - b2) * g1 ** 2 + (1 - b2) * g2 ** 2
    mh, vh = m / (1 - b1 ** 2), v / (1 - b2 ** 2)
    w2 = w1 * (1 - lr * wd) - lr * mh / (np.sqrt(vh) + eps)
    np.testing.assert_allclose(params["fc.weight"], w2, rtol=1e-12)
    assert state["step"] == 2
    np.testing.assert_allclose(state["m"]["fc.weight"], m)
    np.testing.assert_allclose(state["v"]["fc.weight"], v)


def test_adamw_keeps_dtype_and_identity():
    params = {"a.weight": np.ones((2, 3), np.float32)}
    state = adamw_init(params)
    ref = params["a.weight"]
    adamw_step(params, {"a.weight": np.full((2, 3), 0.5, np.float32)}, state, 1e-3)
    assert params["a.weight"] is ref and ref.dtype == np.float32       # updated in place
    np.testing.assert_allclose(ref, 1 - 1e-3 * 0.05 - 1e-3 / (1 + 2e-8), rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_by_hand(nesterov):
    params = {"w.weight": np.array([1.0]), "w.bias": np.array([1.0])}
    state = sgd_init(params)
    lr, mu, wd = 0.1, 0.9, 0.01
    p, b = 1.0, 0.0
    pb, bb = 1.0, 0.0
    for g in (0.5, -0.25, 1.0):
        sgd_step(params, {"w.weight": np.array([g]), "w.bias": np.array([g])}, state, lr,
                 momentum=mu, nesterov=nesterov, weight_decay=wd)
        gd = g + wd * p                                       # L2 on the weight only
        b = mu * b + gd
        p -= lr * (gd + mu * b if nesterov else b)
        bb = mu * bb + g
        pb -= lr * (g + mu * bb if nesterov else bb)
        assert params["w.weight"][0] == pytest.approx(p, rel=1e-12)
        assert params["w.bias"][0] == pytest.approx(pb, rel=1e-12)
    assert state["step"] == 3


def test_sgd_plain():
    params = {"w.weight": np.array([2.0])}
    sgd_step(params, {"w.weight": np.array([3.0])}, sgd_init(params), 0.5, momentum=0.0)
    assert params["w.weight"][0] == 0.5


def test_clip_grad_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    total = clip_grad_norm(grads, 1.0)
    assert isinstance(total, np.ndarray | np.floating) and float(total) == pytest.approx(5.0)
    np.testing.assert_allclose(grads["a"], [3 / (5 + 1e-6), 0.0])
    np.testing.assert_allclose(grads["b"], [[4 / (5 + 1e-6)]])
    small = {"a": np.array([0.3, 0.4])}
    assert float(clip_grad_norm(small, 1.0)) == pytest.approx(0.5)
    np.testing.assert_array_equal(small["a"], [0.3, 0.4])              # under the limit: as is


def test_adamw_grad_scale_is_clipping_folded_in():
    """adamw_step(grad_scale=clip_scale(...)) updates exactly as clip_grad_norm then adamw_step,
    and leaves the gradients unscaled."""
    rng = np.random.default_rng(0)
    params = {"fc.weight": rng.standard_normal((4, 3)).astype(np.float32),
              "fc.bias": rng.standard_normal(3).astype(np.float32)}
    grads = {k: 5 * rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    clipped, folded = ({k: v.copy() for k, v in params.items()} for _ in range(2))
    g1, g2 = ({k: v.copy() for k, v in grads.items()} for _ in range(2))
    s1, s2 = adamw_init(clipped), adamw_init(folded)
    clip_grad_norm(g1, 1.0)
    adamw_step(clipped, g1, s1, 1e-2, weight_decay=0.1)
    scale, total = clip_scale(g2, 1.0)
    assert 0 < float(scale) < 1 and float(total) > 1
    adamw_step(folded, g2, s2, 1e-2, weight_decay=0.1, grad_scale=scale)
    for k in params:
        np.testing.assert_array_equal(folded[k], clipped[k])
        np.testing.assert_array_equal(s2["m"][k], s1["m"][k])
        np.testing.assert_array_equal(s2["v"][k], s1["v"][k])
        np.testing.assert_array_equal(g2[k], grads[k])


def test_cosine_lr():
    base, total, warm = 1.0, 110, 10
    assert cosine_lr(0, total, base, warm) == pytest.approx(0.1)
    assert cosine_lr(4, total, base, warm) == pytest.approx(0.5)
    assert cosine_lr(9, total, base, warm) == pytest.approx(1.0)
    assert cosine_lr(10, total, base, warm) == pytest.approx(1.0)
    assert cosine_lr(60, total, base, warm) == pytest.approx(0.5)
    assert cosine_lr(35, total, base, warm) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_lr(110, total, base, warm, min_lr=0.1) == pytest.approx(0.1)
    assert cosine_lr(60, total, base, warm, min_lr=0.2) == pytest.approx(0.6)
    assert cosine_lr(0, 10, 2.0, 0) == pytest.approx(2.0)
