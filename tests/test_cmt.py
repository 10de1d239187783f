"""CMT: gradient checks of LMHSA, LPU, IRFFN, the block and a tiny model end to end (float64),
preset parameter counts against the official code's, parity with a plain PyTorch CMT."""
import numpy as np
import pytest
from conftest import assert_gradcheck, torch_or_skip
from test_gradcheck_layers import randn

from minivit.backend import default_rng, to_device
from minivit.cmt import (
    CMTConfig,
    cmt_attention_maps,
    cmt_b,
    cmt_backward,
    cmt_cifar,
    cmt_forward,
    cmt_param_shapes,
    cmt_s,
    cmt_state_shapes,
    cmt_ti,
    cmt_xs,
    count_cmt_params,
    init_cmt_params,
    init_cmt_state,
)
from minivit.cmt.attention import lmhsa_backward, lmhsa_forward
from minivit.cmt.block import (
    cmt_block_backward,
    cmt_block_forward,
    irffn_backward,
    irffn_forward,
    lpu_backward,
    lpu_forward,
)
from minivit.cmt.params import block_shapes, bn_names
from minivit.gradcheck import check_gradients

# cmt_cifar's geometry (maps 16, 8, 4, 2; keys 16, 16, 16, 4: every B gets a gradient) with
# tiny widths; stage b has two blocks, so its shared B's gradient sums over them.
TINY = CMTConfig(image_size=32, num_classes=3, embed_dims=(4, 6, 6, 8), stem_channel=3,
                 stem_stride=1, fc_dim=6, num_heads=(1, 2, 2, 2), mlp_ratios=(2, 1.5, 1, 1),
                 depths=(1, 2, 1, 1), sr_ratios=(4, 2, 1, 1), head_dropout=0.0)


def assert_gradcheck_cmt(report, train):
    """assert_gradcheck, except for gradients that are exactly 0 (up to rounding) by structure,
    as in PyTorch: the key bias (q (k + b_k) adds q b_k to a whole row of scores, which softmax
    ignores) and, in training, a per-channel shift that only linear maps separate from a
    BatchNorm, which subtracts the batch mean again: the biases of sr.0, mlp.conv2.0 and _fc
    (conv -> BN), and of mlp.proj_bn (BN -> 1x1 conv -> BN)."""
    zero = ("k__bias",) + (("sr__0__bias", "conv2__0__bias", "_fc__bias", "proj_bn__bias")
                           if train else ())
    report = dict(report)
    for name in [n for n in report if n.endswith(zero)]:
        assert report.pop(name)[2] < 1e-10, name
    assert_gradcheck(report)


def keyword_safe(fw_inner, bw_inner, params, extra=()):
    """Wrap forward/backward so that dotted parameter names pass through **kwargs."""
    keys = {k: k.replace(".", "__") for k in params}

    def fw(x, **kw):
        return fw_inner(x, {k: kw[n] for k, n in keys.items()},
                        *[kw[e] for e in extra])

    def bw(G, cache):
        dx, grads = bw_inner(G, cache)
        assert set(grads) == set(params) | set(extra), set(grads) ^ set(params)
        return {"x": dx, **{keys.get(k, k): v for k, v in grads.items()}}
    return fw, bw, {keys[k]: v for k, v in params.items()}


def random_block_params(rng, D, hidden, sr):
    return {k: randn(rng, *s, scale=0.5) + (1.0 if k.endswith("norm1.weight") else 0.0)
            for k, s in block_shapes(D, hidden, sr).items()}


def block_state(p, D, sr):
    return {n + b: to_device(np.full(p[n + "weight"].shape, 0.5 if b == "running_var" else 0.1))
            for n in bn_names(p) for b in ("running_mean", "running_var")}


@pytest.mark.parametrize("sr,train", [(2, True), (2, False), (1, True)])
def test_lmhsa_gradcheck(rng, sr, train):
    D, H, hw = 6, 2, (4, 4)
    p = {k[5:]: v for k, v in random_block_params(rng, D, 8, sr).items() if k.startswith("attn.")}
    state = block_state(p, D, sr)
    rel = randn(rng, H, 16, 16 // sr ** 2)

    def fw(x, q, rel):
        return lmhsa_forward(x, q, state, rel, hw, H, sr, train)

    def bw(G, c):
        dx, g = lmhsa_backward(G, c)
        g["rel"] = g.pop("relative_pos")
        return dx, g
    fw2, bw2, inputs = keyword_safe(fw, bw, p, extra=("rel",))
    rep = check_gradients(fw2, bw2, {"x": randn(rng, 3, 16, D), **inputs, "rel": rel})
    assert_gradcheck_cmt(rep, train)


def test_lpu_and_irffn_gradcheck(rng):
    D, hidden, hw = 4, 6, (3, 4)
    p = random_block_params(rng, D, hidden, 1)
    lpu = {k: v for k, v in p.items() if k.startswith("proj.")}
    fw, bw, inputs = keyword_safe(lambda x, q: lpu_forward(x, q, hw), lpu_backward, lpu)
    assert_gradcheck(check_gradients(fw, bw, {"x": randn(rng, 2, 12, D), **inputs}))
    mlp = {k[4:]: v for k, v in p.items() if k.startswith("mlp.")}
    for train in (True, False):
        state = block_state(mlp, D, 1)
        fw, bw, inputs = keyword_safe(
            lambda x, q, train=train, state=state: irffn_forward(x, q, state, hw, train),
            irffn_backward, mlp)
        assert_gradcheck_cmt(check_gradients(fw, bw, {"x": randn(rng, 2, 12, D), **inputs}),
                             train)


@pytest.mark.parametrize("sr,train,drop_path", [(2, True, 0.0), (2, False, 0.0), (1, True, 0.3)])
def test_cmt_block_gradcheck(rng, sr, train, drop_path):
    D, H, hw, hidden = 4, 2, (4, 4), 6
    p = random_block_params(rng, D, hidden, sr)
    state = block_state(p, D, sr)
    rel = randn(rng, H, 16, 16 // sr ** 2)

    def fw(x, q, rel):
        return cmt_block_forward(x, q, state, rel, hw, H, sr, drop_path=drop_path,
                                 rng=default_rng(4), train=train)

    def bw(G, c):
        dx, g = cmt_block_backward(G, c)
        g["rel"] = g.pop("relative_pos")
        return dx, g
    fw2, bw2, inputs = keyword_safe(fw, bw, p, extra=("rel",))
    # eps 1e-5: at 1e-6 round-off puts mlp.conv1.0.bias at 8e-8 in eval mode; here all < 1e-8
    rep = check_gradients(fw2, bw2, {"x": randn(rng, 4, 16, D), **inputs, "rel": rel},
                          max_elems=24, eps=1e-5)
    assert_gradcheck_cmt(rep, train)


def random_params(cfg, seed=0):
    """Perturbed init; linear weights N(0, 1/fan_in) so that attention is far from uniform (with
    the init's std 0.02 the scores are ~0 and q's gradients ~1e-4, below what central
    differences resolve to 1e-7)."""
    p = init_cmt_params(cfg, seed=seed, dtype="float64")
    rng = np.random.default_rng(seed + 1)
    return {k: v + to_device(rng.normal(0, 0.1 if v.ndim != 2 else v.shape[0] ** -0.5, v.shape))
            for k, v in p.items()}


@pytest.mark.parametrize("train", [True, False])
def test_gradcheck_whole_tiny_cmt(train):
    # training: stochastic depth and head dropout on, with the same masks in every forward
    cfg = TINY.replace(drop_path=0.2, head_dropout=0.3) if train else TINY
    params = random_params(cfg)
    state = {k: v + 0.2 for k, v in init_cmt_state(cfg, "float64").items()}
    fw, bw, inputs = keyword_safe(
        lambda x, p: cmt_forward(p, x, cfg, train=train, rng=default_rng(5), state=state),
        lambda G, c: cmt_backward(G, c), params)
    x = to_device(np.random.default_rng(2).standard_normal((3, 3, 32, 32)))
    rel = [k for k in inputs if k.startswith("relative_pos")]
    # Many entries of B (and of dimages) have tiny gradients (small attention probabilities),
    # where central differences at eps 1e-6 are round-off bound (up to 3e-7 relative, seen);
    # at eps 1e-5 over 16 entries each they agree to ~1e-8. Everything else at the default eps.
    rest = {k: v for k, v in inputs.items() if k not in rel}
    rep = check_gradients(lambda **kw: fw(x, **{**inputs, **kw}), lambda G, c: bw(G, c),
                          rest, max_elems=6)
    rep.update(check_gradients(lambda x, **kw: fw(x, **{**inputs, **kw}), bw,
                               {"x": x, **{k: inputs[k] for k in rel}}, max_elems=16, eps=1e-5))
    assert set(rep) == {"x", *inputs}
    assert_gradcheck_cmt(rep, train)


# Official counts (huawei-noah/Efficient-AI-Backbones cmt_pytorch, at 1000 classes).
@pytest.mark.parametrize("preset,official", [(cmt_ti, 9.49e6), (cmt_xs, 15.24e6),
                                             (cmt_s, 26.26e6), (cmt_b, 45.72e6)])
def test_preset_parameter_counts(preset, official):
    n = count_cmt_params(preset())                     # shapes only: nothing allocated
    assert abs(n - official) / official < 1e-3, n


def test_shapes_are_what_the_model_allocates():
    cfg = cmt_cifar()
    params, state = init_cmt_params(cfg), init_cmt_state(cfg)
    assert {k: v.shape for k, v in params.items()} == cmt_param_shapes(cfg)
    assert {k: v.shape for k, v in state.items()} == cmt_state_shapes(cfg)
    assert [cfg.num_keys(i) for i in range(4)] == [16, 16, 16, 4]
    assert params["relative_pos_a"].shape == (1, 256, 16)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    logits, cache = cmt_forward(params, x, cfg, state=state)
    assert logits.shape == (2, 10) and logits.dtype == np.float32
    maps = cmt_attention_maps(cache)
    assert len(maps) == sum(cfg.depths) and maps[-1].shape == (2, 8, 4, 4)


def test_paper_strides_leave_one_key_at_32px():
    assert [cmt_ti(image_size=32).num_keys(i) for i in range(4)] == [1, 1, 1, 1]


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="sr_ratio 8 must divide"):
        cmt_ti(image_size=112)
    with pytest.raises(ValueError, match="cannot be halved"):
        cmt_ti(image_size=36, sr_ratios=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="divisible by its heads"):
        CMTConfig(embed_dims=(46, 92, 184, 367))
    params = init_cmt_params(TINY)
    with pytest.raises(ValueError, match="running statistics"):
        cmt_forward(params, np.zeros((2, 3, 32, 32), np.float32), TINY)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        cmt_forward(params, np.zeros((2, 3, 16, 16), np.float32), TINY, state=init_cmt_state(TINY))


def test_matches_torch_train_and_eval():
    torch = torch_or_skip()
    from torch_conv_models import TorchCMT, check_parity_steps, cmt_state_dict, cmt_torch_grads
    cfg = TINY.replace(depths=(2, 1, 1, 2), num_classes=5)
    params, state = random_params(cfg, seed=3), init_cmt_state(cfg, "float64")
    ref = TorchCMT(cfg).double()
    assert sum(p.numel() for p in ref.parameters()) == count_cmt_params(cfg)
    ref.load_state_dict(cmt_state_dict(params, state))
    check_parity_steps(torch, ref, lambda x, train: cmt_forward(params, x, cfg, train, state=state),
                       cmt_backward, state, (4, 3, 32, 32), cfg.num_classes, cmt_torch_grads)


def test_torch_reference_counts_the_official_presets():
    torch_or_skip()
    from torch_conv_models import TorchCMT
    ref = TorchCMT(cmt_ti())
    assert sum(p.numel() for p in ref.parameters()) == count_cmt_params(cmt_ti())
    assert {k: tuple(v.shape) for k, v in ref.state_dict().items()
            if not k.endswith("num_batches_tracked")} == {
        k: (s[::-1] if len(s) == 2 else s)
        for k, s in {**cmt_param_shapes(cmt_ti()), **cmt_state_shapes(cmt_ti())}.items()}
