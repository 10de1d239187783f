"""Official vision_transformer / big_vision .npz checkpoints: a small checkpoint written here in
each layout, loaded, and compared with the PyTorch reference loaded through its own mapping."""
import numpy as np
import pytest
from conftest import torch_or_skip

from minivit import vit_forward
from minivit.transfer.official import load_official
from minivit.transfer.resize import resize_pos_embed

P, C, D, HEADS, M, DEPTH, K, GRID = 4, 3, 16, 2, 24, 2, 5, 3


def official_npz(rng, prefix="", grid=GRID):
    """Random arrays under the vision_transformer names and shapes (Flax layout)."""
    def r(*shape):
        return rng.standard_normal(shape) * 0.3
    Dh = D // HEADS
    w = {"embedding/kernel": r(P, P, C, D), "embedding/bias": r(D), "cls": r(1, 1, D),
         "Transformer/posembed_input/pos_embedding": r(1, 1 + grid * grid, D),
         "Transformer/encoder_norm/scale": 1 + r(D), "Transformer/encoder_norm/bias": r(D),
         "head/kernel": r(D, K), "head/bias": r(K)}
    for i in range(DEPTH):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            w[f"{b}{ln}/scale"], w[f"{b}{ln}/bias"] = 1 + r(D), r(D)
        for n in ("query", "key", "value"):
            w[f"{b}MultiHeadDotProductAttention_1/{n}/kernel"] = r(D, HEADS, Dh)
            w[f"{b}MultiHeadDotProductAttention_1/{n}/bias"] = r(HEADS, Dh)
        w[f"{b}MultiHeadDotProductAttention_1/out/kernel"] = r(HEADS, Dh, D)
        w[f"{b}MultiHeadDotProductAttention_1/out/bias"] = r(D)
        w[f"{b}MlpBlock_3/Dense_0/kernel"], w[f"{b}MlpBlock_3/Dense_0/bias"] = r(D, M), r(M)
        w[f"{b}MlpBlock_3/Dense_1/kernel"], w[f"{b}MlpBlock_3/Dense_1/bias"] = r(M, D), r(D)
    return {prefix + k: v for k, v in w.items()}


def to_big_vision(w):
    """The same weights in big_vision's layout: params/, pos_embedding, stacked blocks."""
    rename = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
              "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}
    out = {}
    for k, v in w.items():
        if k.startswith("Transformer/encoderblock_0/"):
            name = k[len("Transformer/encoderblock_0/"):]
            for a, b in rename.items():
                name = name.replace(a, b)
            out[f"params/Transformer/encoderblock/{name}"] = np.stack(
                [w[k.replace("encoderblock_0", f"encoderblock_{i}")] for i in range(DEPTH)])
        elif "encoderblock_" not in k:
            out["params/" + k.replace("Transformer/posembed_input/", "")] = v
    return out


def torch_state_dict(w):
    """vision_transformer names -> the PyTorch reference's (timm's) names, from the layout."""
    sd = {"patch_embed.proj.weight": w["embedding/kernel"].transpose(3, 2, 0, 1),  # OIHW
          "patch_embed.proj.bias": w["embedding/bias"], "cls_token": w["cls"],
          "pos_embed": w["Transformer/posembed_input/pos_embedding"],
          "norm.weight": w["Transformer/encoder_norm/scale"],
          "norm.bias": w["Transformer/encoder_norm/bias"],
          "head.weight": w["head/kernel"].T, "head.bias": w["head/bias"]}
    for i in range(DEPTH):
        b, t = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        mha = b + "MultiHeadDotProductAttention_1/"
        sd[t + "norm1.weight"], sd[t + "norm1.bias"] = w[b + "LayerNorm_0/scale"], \
            w[b + "LayerNorm_0/bias"]
        sd[t + "norm2.weight"], sd[t + "norm2.bias"] = w[b + "LayerNorm_2/scale"], \
            w[b + "LayerNorm_2/bias"]
        sd[t + "attn.qkv.weight"] = np.concatenate(
            [w[f"{mha}{n}/kernel"].reshape(D, D).T for n in ("query", "key", "value")])
        sd[t + "attn.qkv.bias"] = np.concatenate(
            [w[f"{mha}{n}/bias"].reshape(D) for n in ("query", "key", "value")])
        sd[t + "attn.proj.weight"] = w[mha + "out/kernel"].reshape(D, D).T
        sd[t + "attn.proj.bias"] = w[mha + "out/bias"]
        for j in range(2):
            sd[t + f"mlp.fc{j + 1}.weight"] = w[f"{b}MlpBlock_3/Dense_{j}/kernel"].T
            sd[t + f"mlp.fc{j + 1}.bias"] = w[f"{b}MlpBlock_3/Dense_{j}/bias"]
    return sd


def torch_logits(torch, w, cfg, images):
    from torch_vit import TorchViT
    ref = TorchViT(cfg).double()
    ref.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                         for k, v in torch_state_dict(w).items()})
    with torch.no_grad():
        return ref(torch.from_numpy(images)).numpy()


@pytest.mark.parametrize("layout", ["vit", "opt/target", "big_vision"])
def test_official_layouts_match_torch_reference(tmp_path, layout):
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    w = official_npz(rng)
    stored = {"vit": w, "opt/target": {"opt/target/" + k: v for k, v in w.items()},
              "big_vision": to_big_vision(w)}[layout]
    path = tmp_path / "ckpt.npz"
    np.savez(path, **stored)
    params, cfg = load_official(str(path), dtype="float64")
    assert (cfg.image_size, cfg.patch_size, cfg.dim, cfg.depth, cfg.heads, cfg.mlp_dim,
            cfg.num_classes) == (GRID * P, P, D, DEPTH, HEADS, M, K)
    assert cfg.gelu == "tanh" and cfg.ln_eps == 1e-6
    images = rng.standard_normal((3, C, GRID * P, GRID * P))
    ours = vit_forward(params, images, cfg)[0]
    assert np.abs(ours - torch_logits(torch, w, cfg, images)).max() < 1e-10


def test_resolution_change_resizes_pos_embed_as_the_official_code():
    torch = torch_or_skip()
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(1)
    w = official_npz(rng)
    params, cfg = load_official(w, image_size=5 * P, dtype="float64")
    assert cfg.image_size == 5 * P and params["pos_embed"].shape == (1, 26, D)
    # the official code: scipy.ndimage.zoom(grid, (new/old, new/old, 1), order=1), class row kept
    pe = w["Transformer/posembed_input/pos_embedding"]
    grid = ndimage.zoom(pe[0, 1:].reshape(GRID, GRID, D), (5 / GRID, 5 / GRID, 1), order=1)
    w2 = dict(w)
    w2["Transformer/posembed_input/pos_embedding"] = np.concatenate(
        [pe[:, :1], grid.reshape(1, 25, D)], axis=1)
    images = rng.standard_normal((2, C, 5 * P, 5 * P))
    ours = vit_forward(params, images, cfg)[0]
    assert np.abs(ours - torch_logits(torch, w2, cfg, images)).max() < 1e-10
    bicubic, _ = load_official(w, image_size=5 * P, resize_mode="bicubic", dtype="float64")
    np.testing.assert_allclose(bicubic["pos_embed"],
                               resize_pos_embed(pe, (3, 3), (5, 5), 1, "bicubic"), atol=0)


def test_new_head_and_bad_files(tmp_path):
    w = official_npz(np.random.default_rng(2))
    params, cfg = load_official(w, num_classes=7)
    assert cfg.num_classes == 7 and params["head.weight"].shape == (D, 7)
    assert not params["head.weight"].any() and not params["head.bias"].any()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_official(str(bad))
    with pytest.raises(ValueError, match="no embedding/kernel"):
        load_official({"foo": np.zeros(1)})
    del w["Transformer/encoder_norm/scale"]
    with pytest.raises(ValueError, match="encoder_norm/scale"):
        load_official(w)
    w["Transformer/encoder_norm/scale"] = np.ones(D)
    w["pre_logits/kernel"] = np.zeros((D, D))
    with pytest.raises(ValueError, match="pre_logits"):
        load_official(w)
