"""Position-embedding variants (App. D.4): gradient checks of each backward, values against
loop references, and what each variant means (no E_pos = a bag of patches)."""
import math

import numpy as np
import pytest
from conftest import assert_gradcheck
from test_model import model_gradcheck

from minivit import ViTConfig, init_params, param_shapes, vit_backward, vit_forward
from minivit.gradcheck import check_gradients
from minivit.layers.patch import patchify, unpatchify
from minivit.layers.posembed import (
    pos_embed_2d_backward,
    pos_embed_2d_forward,
    rel_bias_backward,
    rel_bias_forward,
    relative_offsets,
)

SMALL = ViTConfig(image_size=(16, 12), patch_size=4, num_classes=5, dim=16, depth=2, heads=2,
                  mlp_dim=32)


def test_param_shapes_per_variant():
    s = {v: param_shapes(SMALL.replace(pos_embed=v)) for v in ("none", "1d", "2d", "rel")}
    assert s["1d"]["pos_embed"] == (1, 13, 16)
    assert s["2d"]["pos_embed_row"] == (4, 8) and s["2d"]["pos_embed_col"] == (3, 8)
    assert s["rel"]["blocks.1.attn.rel_pos"] == (7 * 5 + 3, 16)
    gap = param_shapes(SMALL.replace(pos_embed="rel", pool="gap"))
    assert gap["blocks.0.attn.rel_pos"] == (35, 16)                # no class rows
    assert not any("pos" in k for k in s["none"])
    with pytest.raises(ValueError, match="pos_embed must be"):
        ViTConfig(pos_embed="sinusoidal")
    with pytest.raises(ValueError, match="even dim"):
        ViTConfig(dim=9, heads=3, pos_embed="2d")


def test_relative_offsets_are_distinct_per_query():
    off = relative_offsets((3, 4))
    assert off.min() == 0 and off.max() == 5 * 7 - 1
    assert all(len(set(row)) == 12 for row in off)           # scatter without collisions
    # patch (0, 0) vs (2, 3): offset (-2, -3) -> row 0, column 0 of the (5, 7) table
    assert off[0, 11] == 0 and off[11, 0] == 4 * 7 + 6 and off[5, 5] == 2 * 7 + 3


def test_2d_values_and_gradcheck(rng):
    row, col = rng.standard_normal((3, 4)), rng.standard_normal((5, 2))
    pos, _ = pos_embed_2d_forward(row, col)
    assert pos.shape == (1, 15, 6)
    np.testing.assert_array_equal(pos[0, 2 * 5 + 3], np.concatenate([row[2], col[3]]))
    rep = check_gradients(lambda pos_embed_row, pos_embed_col:
                          pos_embed_2d_forward(pos_embed_row, pos_embed_col),
                          pos_embed_2d_backward, {"pos_embed_row": row, "pos_embed_col": col})
    assert_gradcheck(rep)


def rel_block_params(rng, D, O):
    return {"norm1.weight": rng.standard_normal(D), "norm1.bias": rng.standard_normal(D),
            "attn.qkv.weight": rng.standard_normal((D, 3 * D)) * 0.5,
            "attn.qkv.bias": rng.standard_normal(3 * D),
            "attn.rel_pos": rng.standard_normal((O, D))}


@pytest.mark.parametrize("pool", ["cls", "gap"])
def test_rel_bias_matches_loops_and_gradcheck(rng, pool):
    cfg = SMALL.replace(pos_embed="rel", pool=pool)
    B, T, D, H = 2, cfg.num_tokens, cfg.dim, cfg.heads
    O = 7 * 5
    p = rel_block_params(rng, D, O + 3 * (pool == "cls"))
    z = rng.standard_normal((B, T, D))
    bias, _ = rel_bias_forward(z, p, cfg)
    # loop reference: the block's own query per head against R[offset] of the same head
    s, Dh, off = int(pool == "cls"), D // H, relative_offsets(cfg.grid)
    ln = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + cfg.ln_eps)
    q = (ln * p["norm1.weight"] + p["norm1.bias"]) @ p["attn.qkv.weight"][:, :D] \
        + p["attn.qkv.bias"][:D]
    ref = np.zeros((B, H, T, T))
    for b in range(B):
        for h in range(H):
            for i in range(T):
                for j in range(T):
                    if i >= s and j >= s:
                        o = off[i - s, j - s]
                    else:                         # class->patch, patch->class, class->class
                        o = O + (2 if i == j == 0 else 0 if i == 0 else 1)
                    r = p["attn.rel_pos"][o, h * Dh:(h + 1) * Dh]
                    ref[b, h, i, j] = q[b, i, h * Dh:(h + 1) * Dh] @ r / math.sqrt(Dh)
    np.testing.assert_allclose(bias, ref, rtol=1e-12, atol=1e-12)

    names = {k: k.replace(".", "__") for k in p}

    def fw(z, **kw):
        return rel_bias_forward(z, {k: kw[n] for k, n in names.items()}, cfg)

    def bw(G, cache):
        dz, g = rel_bias_backward(G, cache)
        g = {k.split("[")[0]: v for k, v in g.items()}
        return {"z": dz, "norm1__weight": g["norm1.weight"], "norm1__bias": g["norm1.bias"],
                "attn__rel_pos": g["attn.rel_pos"],
                "attn__qkv__weight": np.pad(g["attn.qkv.weight"], ((0, 0), (0, 2 * D))),
                "attn__qkv__bias": np.pad(g["attn.qkv.bias"], (0, 2 * D))}
    inputs = {"z": z, **{names[k]: v for k, v in p.items()}}
    rep = check_gradients(fw, bw, inputs)
    assert_gradcheck(rep)


@pytest.mark.parametrize("variant,pool", [("none", "cls"), ("2d", "cls"), ("2d", "gap"),
                                          ("rel", "cls"), ("rel", "gap")])
def test_whole_model_gradcheck(variant, pool):
    cfg = ViTConfig(image_size=16, patch_size=4, num_classes=5, dim=16, depth=2, heads=2,
                    mlp_dim=32, pos_embed=variant, pool=pool)
    assert_gradcheck(model_gradcheck(cfg, max_elems=24))


def test_without_position_embedding_the_model_sees_a_bag_of_patches():
    cfg = SMALL.replace(pos_embed="none")
    params = init_params(cfg, seed=0, dtype="float64", zero_head=False)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 12))
    perm = np.random.default_rng(1).permutation(cfg.num_patches)
    x_perm = unpatchify(patchify(x, 4)[:, perm], 4, 3, 16, 12)
    l1, _ = vit_forward(params, x, cfg)
    l2, _ = vit_forward(params, x_perm, cfg)
    np.testing.assert_allclose(l1, l2, rtol=1e-10, atol=1e-12)
    for variant in ("1d", "2d", "rel"):                       # with positions it is not
        p = init_params(cfg.replace(pos_embed=variant), seed=0, dtype="float64",
                        zero_head=False)
        a = vit_forward(p, x, cfg.replace(pos_embed=variant))[0]
        b = vit_forward(p, x_perm, cfg.replace(pos_embed=variant))[0]
        assert np.abs(a - b).max() > 1e-6, variant


def test_rel_gradients_cover_every_parameter():
    cfg = SMALL.replace(pos_embed="rel")
    params = init_params(cfg, seed=0, dtype="float64", zero_head=False)
    logits, cache = vit_forward(params, np.ones((1, 3, 16, 12)), cfg)
    _, grads = vit_backward(np.ones_like(logits), cache)
    assert {k: g.shape for k, g in grads.items()} == {k: v.shape for k, v in params.items()}


def test_train_cifar_pos_embed_flag_and_no_decay_on_position_tables():
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import train_cifar
    from minivit.optim import no_weight_decay
    args = train_cifar.parse_args(["--pos-embed", "rel", "--epochs", "2"])
    cfg, _ = train_cifar.build_config(args)
    assert cfg.pos_embed == "rel"
    assert train_cifar.build_config(train_cifar.parse_args([]))[0].pos_embed == "1d"
    assert all(no_weight_decay(n) for n in ("pos_embed", "pos_embed_row", "pos_embed_col",
                                            "blocks.3.attn.rel_pos"))
    assert not no_weight_decay("blocks.3.attn.qkv.weight")
