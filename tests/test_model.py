"""The whole model end to end: gradient checks, float32 vs float64, presets, bad input."""
import numpy as np
import pytest
from conftest import assert_gradcheck

from minivit import (
    ViTConfig,
    attention_maps,
    count_params,
    cross_entropy,
    init_params,
    param_shapes,
    predict,
    vit_b16,
    vit_backward,
    vit_forward,
    vit_h14,
    vit_l16,
)
from minivit.backend import default_rng, to_device, to_numpy
from minivit.gradcheck import check_gradients

SMALL = ViTConfig(image_size=16, patch_size=4, num_classes=5, dim=16, depth=2, heads=2,
                  mlp_dim=32)


def random_params(cfg, seed=0, dtype="float64"):
    p = init_params(cfg, seed=seed, dtype=dtype, zero_head=False)
    rng = np.random.default_rng(seed + 1)      # non-trivial LN scales, biases, cls token
    return {k: v + to_device(rng.normal(0, 0.1, v.shape).astype(dtype)) for k, v in p.items()}


def model_gradcheck(cfg, train=False, max_elems=None, batch=2, all_tokens=True):
    params = random_params(cfg)
    images = to_device(np.random.default_rng(2).standard_normal((batch, 3, 16, 16)))
    keys = {k: k.replace(".", "__") for k in params}

    def fw(images, **kw):
        p = {k: kw[n] for k, n in keys.items()}
        return vit_forward(p, images, cfg, train=train, rng=default_rng(9) if train else None,
                           all_tokens=all_tokens)

    def bw(G, cache):
        dimages, grads = vit_backward(G, cache)
        assert set(grads) == set(params)
        return {"images": dimages, **{keys[k]: v for k, v in grads.items()}}
    inputs = {"images": images, **{keys[k]: v for k, v in params.items()}}
    return check_gradients(fw, bw, inputs, max_elems=max_elems)


def test_gradcheck_whole_model_cls():
    assert_gradcheck(model_gradcheck(SMALL))


def test_gradcheck_whole_model_gap_tanh():
    assert_gradcheck(model_gradcheck(SMALL.replace(pool="gap", gelu="tanh"), max_elems=64))


def test_gradcheck_whole_model_dropout_fixed_mask():
    cfg = SMALL.replace(dropout=0.1, attn_dropout=0.1, drop_path=0.2)
    assert_gradcheck(model_gradcheck(cfg, train=True, max_elems=64, batch=6))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gradcheck_cross_entropy(smoothing):
    rng = np.random.default_rng(0)
    labels = to_device(rng.integers(0, 6, 4))

    def fw(logits):
        loss, d = cross_entropy(logits, labels, smoothing)
        return loss.reshape(1), d
    rep = check_gradients(fw, lambda G, d: {"logits": d * G[0]},
                          {"logits": to_device(rng.standard_normal((4, 6)) * 3)})
    assert_gradcheck(rep)


def test_cross_entropy_soft_targets_and_value():
    logits = np.array([[2.0, 0.0, -1.0]])
    loss, d = cross_entropy(logits, np.array([0]), label_smoothing=0.3)
    logp = logits - np.log(np.exp(logits).sum())
    t = np.array([0.8, 0.1, 0.1])
    assert np.isclose(loss, -(t * logp).sum())
    loss2, d2 = cross_entropy(logits, t[None], 0.0)
    assert np.isclose(loss, loss2) and np.allclose(d, d2)


def test_float32_agrees_with_float64():
    cfg = ViTConfig.cifar()
    p64 = random_params(cfg, dtype="float64")
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32))
    l64, c64 = vit_forward(p64, to_device(x), cfg)
    l32, c32 = vit_forward(p32, to_device(x.astype(np.float32)), cfg)
    assert l32.dtype == np.float32
    rel = np.linalg.norm(to_numpy(l32) - to_numpy(l64)) / np.linalg.norm(to_numpy(l64))
    assert rel < 1e-5
    y = to_device(np.arange(4) % 10)
    _, g32 = vit_backward(cross_entropy(l32, y)[1], c32)
    assert all(g.dtype == np.float32 for g in g32.values()), "silent upcast in backward"


def test_paper_parameter_counts():
    # Table 1: 86M, 307M, 632M; counted from the shapes, nothing allocated.
    assert count_params(vit_b16()) == 86_567_656
    assert count_params(vit_l16()) == 304_326_632
    assert count_params(vit_h14()) == 632_045_800
    cfg = ViTConfig.cifar()
    params = init_params(cfg)
    assert {k: v.shape for k, v in params.items()} == param_shapes(cfg)
    assert sum(v.size for v in params.values()) == count_params(cfg)
    assert params["pos_embed"].shape == (1, 65, 128)


def test_init_is_reference_like():
    p = init_params(ViTConfig.cifar(), seed=0)
    assert not p["head.weight"].any() and not p["cls_token"].any()
    assert abs(float(p["pos_embed"].std()) - 0.02) < 0.002
    lim = np.sqrt(6 / (128 + 384))
    w = to_numpy(p["blocks.0.attn.qkv.weight"])
    assert w.max() <= lim and w.min() >= -lim and w.std() > lim / 2
    assert (to_numpy(init_params(ViTConfig.cifar(), seed=0)["pos_embed"])
            == to_numpy(p["pos_embed"])).all()


def test_zero_head_gives_only_head_gradient():
    cfg = SMALL
    params = init_params(cfg, seed=0, dtype="float64")
    x = to_device(np.random.default_rng(0).standard_normal((2, 3, 16, 16)))
    logits, cache = vit_forward(params, x, cfg)
    _, grads = vit_backward(cross_entropy(logits, to_device(np.array([0, 1])))[1], cache)
    nonzero = {k for k, g in grads.items() if np.abs(to_numpy(g)).max() > 0}
    assert nonzero == {"head.weight", "head.bias"}


def test_predict_gives_probabilities():
    cfg = SMALL
    params = random_params(cfg, dtype="float32")
    x = to_device(np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32))
    probs = to_numpy(predict(params, x, cfg, batch_size=2))
    assert probs.shape == (5, 5) and np.allclose(probs.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(probs.argmax(1), to_numpy(vit_forward(params, x, cfg)[0]).argmax(1))


@pytest.mark.parametrize("shape,dtype,match", [
    ((3, 16, 16), np.float32, "4-D"),
    ((2, 1, 16, 16), np.float32, r"\(B, 3, 16, 16\)"),
    ((2, 3, 20, 20), np.float32, r"\(B, 3, 16, 16\)"),
    ((2, 3, 18, 16), np.float32, "not divisible by the patch size 4"),
    ((2, 3, 16, 16), np.uint8, "floating point"),
])
def test_bad_images(shape, dtype, match):
    params = init_params(SMALL)
    with pytest.raises(ValueError, match=match):
        vit_forward(params, to_device(np.zeros(shape, dtype)), SMALL)


def test_bad_config_and_labels():
    with pytest.raises(ValueError, match="dim 10 must be divisible by heads 4"):
        ViTConfig(dim=10, heads=4)
    with pytest.raises(ValueError, match="patch size 5 must divide the image size 32x32"):
        ViTConfig(patch_size=5)
    with pytest.raises(ValueError, match="pool"):
        ViTConfig(pool="max")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="integer labels"):
        cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="float type"):
        init_params(SMALL, dtype="int32")


def test_attention_maps_are_row_stochastic():
    params = random_params(SMALL, dtype="float64")
    x = to_device(np.random.default_rng(0).standard_normal((3, 3, 16, 16)))
    maps = attention_maps(vit_forward(params, x, SMALL)[1])
    assert len(maps) == SMALL.depth
    for A in maps:
        assert A.shape == (3, SMALL.heads, SMALL.num_tokens, SMALL.num_tokens)
        np.testing.assert_allclose(to_numpy(A).sum(-1), 1.0, atol=1e-12)
