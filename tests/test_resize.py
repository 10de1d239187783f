"""Position-embedding resizing: identity at the same size, exact on linear ramps (corner-aligned),
scipy.ndimage.zoom(order=1) and torch's bicubic interpolate as references, 32 px model at 48 px."""
import numpy as np
import pytest
from conftest import torch_or_skip

from minivit import ViTConfig, init_params, param_shapes, vit_forward
from minivit.transfer import resize_grid, resize_params, resize_pos_embed
from minivit.transfer.resize import resize_images

SIZES = [((8, 8), (12, 12)), ((8, 8), (5, 5)), ((4, 6), (7, 3)), ((3, 5), (9, 10))]


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_identity_at_the_same_size(mode):
    g = np.random.default_rng(0).standard_normal((5, 7, 3))
    np.testing.assert_allclose(resize_grid(g, (5, 7), mode), g, rtol=0, atol=1e-15)


@pytest.mark.parametrize("old,new", SIZES)
def test_bilinear_is_exact_on_linear_ramps(old, new):
    (h, w), (h2, w2) = old, new
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ramp = np.stack([2.0 * i - 3.0 * j + 1.0, 0.5 * j], axis=-1)          # (h, w, 2)
    # corner-aligned: new index a sits at old coordinate a (h-1)/(h2-1)
    a, b = np.meshgrid(np.arange(h2) * (h - 1) / (h2 - 1), np.arange(w2) * (w - 1) / (w2 - 1),
                       indexing="ij")
    expected = np.stack([2.0 * a - 3.0 * b + 1.0, 0.5 * b], axis=-1)
    np.testing.assert_allclose(resize_grid(ramp, new, "bilinear"), expected, atol=1e-12)


@pytest.mark.parametrize("old,new", SIZES)
def test_bilinear_matches_scipy_zoom_order_1(old, new):
    ndimage = pytest.importorskip("scipy.ndimage")
    g = np.random.default_rng(1).standard_normal((*old, 4))
    zoom = (new[0] / old[0], new[1] / old[1], 1)
    ref = ndimage.zoom(g, zoom, order=1)
    assert ref.shape[:2] == new
    np.testing.assert_allclose(resize_grid(g, new, "bilinear"), ref, atol=1e-12)


@pytest.mark.parametrize("old,new", SIZES)
def test_bicubic_matches_torch_interpolate(old, new):
    torch = torch_or_skip()
    g = np.random.default_rng(2).standard_normal((*old, 4))
    x = torch.from_numpy(g).permute(2, 0, 1)[None]                          # (1, D, h, w)
    ref = torch.nn.functional.interpolate(x, size=new, mode="bicubic", align_corners=False)
    ref = ref[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(resize_grid(g, new, "bicubic"), ref, atol=1e-12)


def test_class_token_row_is_kept_and_bad_shapes_are_named():
    pe = np.random.default_rng(3).standard_normal((1, 1 + 16, 6))
    out = resize_pos_embed(pe, (4, 4), (6, 6))
    assert out.shape == (1, 37, 6)
    np.testing.assert_array_equal(out[0, 0], pe[0, 0])
    with pytest.raises(ValueError, match="17 rows, expected 1 \\+ 5x5"):
        resize_pos_embed(pe, (5, 5), (6, 6))
    with pytest.raises(ValueError, match="mode must be one of"):
        resize_grid(pe[0, 1:].reshape(4, 4, 6), (6, 6), "nearest")


@pytest.mark.parametrize("mode,variant", [("bilinear", "1d"), ("bicubic", "1d"),
                                          ("bilinear", "2d"), ("bicubic", "rel")])
def test_a_32px_model_runs_at_48px(mode, variant):
    cfg = ViTConfig(image_size=32, patch_size=8, num_classes=3, dim=16, depth=1, heads=2,
                    mlp_dim=16, pos_embed=variant)
    cfg48 = cfg.replace(image_size=48)
    params = init_params(cfg, seed=0, dtype="float64", zero_head=False)
    p48 = resize_params(params, cfg, cfg48, mode)
    assert {k: v.shape for k, v in p48.items()} == param_shapes(cfg48)
    assert p48["patch_embed.weight"] is params["patch_embed.weight"]
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 48))
    logits, _ = vit_forward(p48, x, cfg48)
    assert logits.shape == (2, 3) and np.isfinite(logits).all()
    with pytest.raises(ValueError, match="changes only image_size"):
        resize_params(params, cfg, cfg48.replace(depth=2))


def test_resize_images_matches_torch():
    torch = torch_or_skip()
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32))
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(48, 48), mode="bicubic",
                                          align_corners=False).numpy()
    np.testing.assert_allclose(resize_images(x, (48, 48)), ref, atol=1e-12)
