"""The hybrid ViT: an end-to-end gradient check, parity with a plain PyTorch reference in
training and eval mode (including BatchNorm running statistics), counts and bad input."""
import numpy as np
import pytest
from conftest import assert_gradcheck, torch_or_skip

from minivit import ViTConfig, count_params
from minivit.backend import to_device
from minivit.gradcheck import check_gradients
from minivit.hybrid import (
    HybridConfig,
    count_hybrid_params,
    hybrid_attention_maps,
    hybrid_backward,
    hybrid_forward,
    hybrid_param_shapes,
    init_hybrid_params,
    init_hybrid_state,
)

TINY = HybridConfig(image_size=8, stem_channels=(4, 6, 8), stem_strides=(1, 2, 2), num_classes=3,
                    dim=8, depth=1, heads=2, mlp_dim=12)


def random_params(cfg, seed=0):
    p = init_hybrid_params(cfg, seed=seed, dtype="float64", zero_head=False)
    rng = np.random.default_rng(seed + 1)
    return {k: v + to_device(rng.normal(0, 0.1, v.shape)) for k, v in p.items()}


@pytest.mark.parametrize("train", [True, False])
def test_gradcheck_whole_hybrid(train):
    params = random_params(TINY)
    state = init_hybrid_state(TINY, "float64")
    state = {k: v + 0.3 for k, v in state.items()}                 # non-trivial eval stats
    keys = {k: k.replace(".", "__") for k in params}

    def fw(images, **kw):
        p = {k: kw[n] for k, n in keys.items()}
        return hybrid_forward(p, images, TINY, train=train, state=state)

    def bw(G, cache):
        dimages, grads = hybrid_backward(G, cache)
        assert set(grads) == set(params)
        return {"images": dimages, **{keys[k]: v for k, v in grads.items()}}
    images = to_device(np.random.default_rng(2).standard_normal((3, 3, 8, 8)))
    inputs = {"images": images, **{keys[k]: v for k, v in params.items()}}
    assert_gradcheck(check_gradients(fw, bw, inputs, max_elems=40))


def test_cifar_shapes_and_counts():
    cfg = HybridConfig()
    assert cfg.feature_size == 8 and cfg.vit.num_tokens == 65
    params = init_hybrid_params(cfg)
    assert {k: v.shape for k, v in params.items()} == hybrid_param_shapes(cfg)
    assert sum(v.size for v in params.values()) == count_hybrid_params(cfg)
    # stem: 3*32*9 + 32*64*9 + 64*128*9 convs + 2*(32+64+128) BN; E is 128x128 instead of 48x128
    stem = 3 * 32 * 9 + 32 * 64 * 9 + 64 * 128 * 9 + 2 * (32 + 64 + 128)
    assert params["patch_embed.weight"].shape == (128, 128)
    assert count_hybrid_params(cfg) == stem + count_params(ViTConfig.cifar()) - 48 * 128 + 128 * 128
    state = init_hybrid_state(cfg)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    logits, cache = hybrid_forward(params, x, cfg, state=state)
    assert logits.shape == (2, 10) and logits.dtype == np.float32
    assert hybrid_attention_maps(cache)[0].shape == (2, 4, 65, 65)


def test_bad_input_and_missing_state():
    params, state = init_hybrid_params(TINY), init_hybrid_state(TINY)
    with pytest.raises(ValueError, match=r"\(B, 3, 8, 8\)"):
        hybrid_forward(params, np.zeros((1, 3, 16, 16), np.float32), TINY, state=state)
    with pytest.raises(ValueError, match="running statistics"):
        hybrid_forward(params, np.zeros((1, 3, 8, 8), np.float32), TINY)


def test_matches_torch_train_and_eval():
    torch = torch_or_skip()
    from torch_conv_models import (
        TorchHybrid,
        check_parity_steps,
        hybrid_state_dict,
        hybrid_torch_grads,
    )
    cfg = TINY.replace(image_size=12, dim=16, depth=2, heads=4, mlp_dim=24, num_classes=5)
    params, state = random_params(cfg, seed=3), init_hybrid_state(cfg, "float64")
    ref = TorchHybrid(cfg).double()
    ref.load_state_dict(hybrid_state_dict(params, state, cfg))
    check_parity_steps(torch, ref,
                       lambda x, train: hybrid_forward(params, x, cfg, train, state=state),
                       hybrid_backward, state, (4, 3, 12, 12), cfg.num_classes,
                       lambda m: hybrid_torch_grads(m, cfg))
