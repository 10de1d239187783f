"""Every layer's backward against central differences in float64: every parameter and the input."""
import numpy as np
import pytest
from conftest import assert_gradcheck

from minivit.backend import default_rng, to_device
from minivit.gradcheck import check_gradients
from minivit.layers import (
    attention_backward,
    attention_forward,
    block_backward,
    block_forward,
    drop_path_backward,
    drop_path_forward,
    drop_path_masks,
    dropout_backward,
    dropout_forward,
    embed_tokens_backward,
    embed_tokens_forward,
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
    mlp_backward,
    mlp_forward,
    patch_embed_backward,
    patch_embed_forward,
)
from minivit.layers.layernorm import fold_into_linear, unfold_grads

B, T, D, H, M = 2, 5, 8, 2, 12


def randn(rng, *shape, scale=1.0):
    return to_device(rng.standard_normal(shape) * scale)


def with_input(backward, input_name="x"):
    """Adapt backward(dout, cache) -> (dx, grads) to the dict check_gradients expects."""
    def bw(G, cache):
        dx, grads = backward(G, cache)
        return {input_name: dx, **grads}
    return bw


def test_linear(rng):
    inputs = {"x": randn(rng, B, T, D), "weight": randn(rng, D, 3), "bias": randn(rng, 3)}
    rep = check_gradients(lambda x, weight, bias: linear_forward(x, weight, bias),
                          with_input(linear_backward), inputs)
    assert_gradcheck(rep)


def test_patch_embed_non_square(rng):
    P, C = 2, 3
    inputs = {"images": randn(rng, 2, C, 4, 6), "weight": randn(rng, P * P * C, D),
              "bias": randn(rng, D)}
    rep = check_gradients(lambda images, weight, bias: patch_embed_forward(images, weight, bias, P),
                          with_input(patch_embed_backward, "images"), inputs)
    assert_gradcheck(rep)


@pytest.mark.parametrize("with_cls", [True, False])
def test_embed_tokens(rng, with_cls):
    N = 4
    inputs = {"e": randn(rng, B, N, D), "pos_embed": randn(rng, 1, N + with_cls, D)}
    if with_cls:
        inputs["cls_token"] = randn(rng, 1, 1, D)
    rep = check_gradients(lambda e, pos_embed, cls_token=None:
                          embed_tokens_forward(e, cls_token, pos_embed),
                          with_input(embed_tokens_backward, "e"), inputs)
    assert_gradcheck(rep)


def test_layernorm(rng):
    inputs = {"x": randn(rng, B, T, D, scale=3.0) + 1.0, "weight": randn(rng, D),
              "bias": randn(rng, D)}
    rep = check_gradients(lambda x, weight, bias: layernorm_forward(x, weight, bias),
                          with_input(layernorm_backward), inputs)
    assert_gradcheck(rep)


def test_layernorm_without_affine(rng):
    """gamma = beta = None: xhat alone (the block folds gamma, beta into the next linear)."""
    rep = check_gradients(lambda x: layernorm_forward(x, None, None),
                          with_input(layernorm_backward), {"x": randn(rng, B, T, D, scale=3.0)})
    assert_gradcheck(rep)
    with pytest.raises(ValueError, match="both None"):
        layernorm_forward(randn(rng, B, T, D), None, randn(rng, D))


def test_layernorm_folded_into_linear(rng):
    """LN(x) W + b as xhat (diag(gamma) W) + (beta W + b), gradients of gamma, beta, W, b
    through unfold_grads, against central differences."""
    def fw(x, gamma, beta, weight, bias):
        xhat, c_ln = layernorm_forward(x, None, None)
        y, c_lin = linear_forward(xhat, *fold_into_linear(gamma, beta, weight, bias))
        return y, (c_ln, c_lin, (gamma, beta, weight))

    def bw(G, cache):
        c_ln, c_lin, args = cache
        dxhat, g = linear_backward(G, c_lin)
        g_lin, g_ln = unfold_grads(*args, g["weight"], g["bias"])
        return {"x": layernorm_backward(dxhat, c_ln)[0], "gamma": g_ln["weight"],
                "beta": g_ln["bias"], "weight": g_lin["weight"], "bias": g_lin["bias"]}
    inputs = {"x": randn(rng, B, T, D, scale=3.0) + 1.0, "gamma": randn(rng, D),
              "beta": randn(rng, D), "weight": randn(rng, D, 5), "bias": randn(rng, 5)}
    assert_gradcheck(check_gradients(fw, bw, inputs))
    y, _ = layernorm_forward(inputs["x"], inputs["gamma"], inputs["beta"])
    assert float(abs(fw(**inputs)[0] - (y @ inputs["weight"] + inputs["bias"])).max()) < 1e-12


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(rng, approximate):
    rep = check_gradients(lambda x: gelu_forward(x, approximate), with_input(gelu_backward),
                          {"x": randn(rng, B, T, D, scale=2.0)})
    assert_gradcheck(rep)


def test_dropout_and_drop_path_fixed_mask(rng):
    for fw, bw in ((dropout_forward, dropout_backward), (drop_path_forward, drop_path_backward)):
        rep = check_gradients(lambda x, fw=fw: fw(x, 0.3, default_rng(7), True), with_input(bw),
                              {"x": randn(rng, 6, T, D)})
        assert_gradcheck(rep)


def test_drop_path_masks_one_draw_for_every_block():
    rates = [0.0, 0.1, 0.3]
    masks = drop_path_masks(default_rng(5), 4000, rates, "float64")
    assert masks[0] is None and len(masks) == 3
    for p, pair in zip(rates[1:], masks[1:], strict=True):
        for m in pair:
            assert m.shape == (4000, 1, 1)
            assert set(np.unique(m)) <= {0.0, 1.0 / (1.0 - p)}
            assert abs((m > 0).mean() - (1 - p)) < 0.03               # kept with prob. 1 - p
    assert not np.array_equal(masks[2][0], masks[2][1])                # branches drawn apart
    x = randn(np.random.default_rng(0), 4000, 2, 3)
    y, cache = drop_path_forward(x, 0.3, None, True, masks[2][0])      # no rng: the mask given
    np.testing.assert_array_equal(y, x * masks[2][0])
    assert drop_path_masks(None, 8, [0.0, 0.0], "float32") == [None, None]
    with pytest.raises(ValueError, match="needs an rng"):
        drop_path_masks(None, 8, rates, "float32")


def attn_params(rng):
    return {"qkv.weight": randn(rng, D, 3 * D, scale=0.5), "qkv.bias": randn(rng, 3 * D),
            "proj.weight": randn(rng, D, D), "proj.bias": randn(rng, D)}


@pytest.mark.parametrize("bias_shape", [None, (B, H, T, T), (1, H, T, T), (T, T), (B, 1, 1, T)])
def test_attention(rng, bias_shape):
    inputs = {"x": randn(rng, B, T, D), **attn_params(rng)}
    if bias_shape:
        inputs["bias"] = randn(rng, *bias_shape)

    def fw(x, bias=None, **p):
        return attention_forward(x, p, H, bias=bias)
    assert_gradcheck(check_gradients(fw, with_input(attention_backward), inputs))


@pytest.mark.parametrize("queries", [1, 3])
def test_attention_first_queries(rng, queries):
    """queries=Tq: outputs for the first Tq tokens, keys and values from all T."""
    def fw(x, **p):
        return attention_forward(x, p, H, queries=queries)
    rep = check_gradients(fw, with_input(attention_backward),
                          {"x": randn(rng, B, T, D), **attn_params(rng)})
    assert_gradcheck(rep)


def test_attention_dropout_fixed_mask(rng):
    def fw(x, **p):
        return attention_forward(x, p, H, attn_dropout=0.25, rng=default_rng(3), train=True)
    rep = check_gradients(fw, with_input(attention_backward),
                          {"x": randn(rng, B, T, D), **attn_params(rng)})
    assert_gradcheck(rep)


def mlp_params(rng, prefix=""):
    return {prefix + "fc1.weight": randn(rng, D, M), prefix + "fc1.bias": randn(rng, M),
            prefix + "fc2.weight": randn(rng, M, D), prefix + "fc2.bias": randn(rng, D)}


@pytest.mark.parametrize("dropout,train", [(0.0, True), (0.2, True), (0.0, False)])
def test_mlp(rng, dropout, train):
    """train=True on NumPy stores GELU(h) and GELU'(h); train=False h and Phi(h) (mlp.py)."""
    def fw(x, **p):
        return mlp_forward(x, p, dropout, default_rng(5), train=train)
    rep = check_gradients(fw, with_input(mlp_backward), {"x": randn(rng, B, T, D),
                                                         **mlp_params(rng)})
    assert_gradcheck(rep)


@pytest.mark.parametrize("rates,queries", [((0.0, 0.0, 0.0), None), ((0.1, 0.1, 0.3), None),
                                           ((0.0, 0.0, 0.0), 1), ((0.1, 0.1, 0.3), 2)])
def test_block(rng, rates, queries):
    dropout, attn_dropout, drop_path = rates
    p = {"norm1.weight": randn(rng, D), "norm1.bias": randn(rng, D),
         "norm2.weight": randn(rng, D), "norm2.bias": randn(rng, D),
         **{"attn." + k: v for k, v in attn_params(rng).items()}, **mlp_params(rng, "mlp.")}
    names = {k: k.replace(".", "__") for k in p}        # keyword-safe names

    def fw(x, **kw):
        q = {k: kw[n] for k, n in names.items()}
        return block_forward(x, q, H, dropout=dropout, attn_dropout=attn_dropout,
                             drop_path=drop_path, rng=default_rng(11), train=True,
                             queries=queries)

    def bw(G, cache):
        dx, grads = block_backward(G, cache)
        return {"x": dx, **{names[k]: v for k, v in grads.items()}}
    inputs = {"x": randn(rng, 8, T, D), **{names[k]: v for k, v in p.items()}}
    assert_gradcheck(check_gradients(fw, bw, inputs))
