"""Resizing the position embeddings E_pos to a new patch grid (running at another resolution).

A model trained at 32 px with P = 4 has an 8 x 8 grid of patch embeddings; at 48 px it needs
12 x 12. The class token's row is kept as it is; the (h, w, D) grid of patch rows is
interpolated to (h', w', D), each of the D channels as an image:

- "bilinear": corner-aligned linear interpolation, as the official code
  (scipy.ndimage.zoom, order 1): output index o samples input coordinate o (h - 1)/(h' - 1),
  so corners map to corners and a linear ramp stays exactly linear.
- "bicubic": half-pixel cubic convolution (Keys 1981, a = -0.75), as timm (PyTorch's
  F.interpolate(mode="bicubic", align_corners=False), no antialias): o samples
  (o + 0.5) h/h' - 0.5, taps outside the grid clamped to the border.

Both are separable, so each is a small (h', h) matrix applied along rows and a (w', w) one
along columns:  grid' = M_h grid M_w^T  (per channel).
"""
import math

import numpy as np

from ..backend import constant, get_array_module

MODES = ("bilinear", "bicubic", "area")


def _linear_corner_matrix(n_in, n_out):
    M = np.zeros((n_out, n_in))
    if n_in == 1 or n_out == 1:
        M[:, 0] = 1.0
        return M
    for o in range(n_out):
        x = o * (n_in - 1) / (n_out - 1)
        i0 = min(int(math.floor(x)), n_in - 2)
        t = x - i0
        M[o, i0] += 1.0 - t
        M[o, i0 + 1] += t
    return M


def _keys_cubic(t, a=-0.75):
    """The cubic convolution kernel W(t) (Keys 1981) at |t| < 2."""
    t = abs(t)
    if t <= 1.0:
        return ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    return ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a


def _cubic_half_pixel_matrix(n_in, n_out):
    M = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for o in range(n_out):
        x = (o + 0.5) * scale - 0.5
        i0 = int(math.floor(x))
        t = x - i0
        for k, dist in zip((-1, 0, 1, 2), (t + 1.0, t, 1.0 - t, 2.0 - t), strict=True):
            M[o, min(max(i0 + k, 0), n_in - 1)] += _keys_cubic(dist)
    return M


def _area_matrix(n_in, n_out):
    if n_out > n_in:
        raise ValueError(f"area resizing only shrinks, got {n_in} -> {n_out}")
    M = np.zeros((n_out, n_in))
    s = n_in / n_out
    for o in range(n_out):
        lo, hi = o * s, (o + 1) * s
        for i in range(int(math.floor(lo)), min(int(math.ceil(hi)), n_in)):
            M[o, i] = (min(hi, i + 1) - max(lo, i)) / s
    return M


def interpolation_matrix(n_in, n_out, mode="bilinear"):
    """(n_out, n_in) host matrix M with out = M @ in along one axis."""
    if mode == "area":
        return _area_matrix(n_in, n_out)
    if mode == "bilinear":
        return _linear_corner_matrix(n_in, n_out)
    if mode == "bicubic":
        return _cubic_half_pixel_matrix(n_in, n_out)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def device_matrix(xp, n_in, n_out, mode, dtype):
    """interpolation_matrix as a read-only `xp` array of `dtype`, made and copied once per
    shape, so a step that resizes (progressive training, fine-tuning) copies nothing."""
    return constant(("interpolation", xp, n_in, n_out, mode, str(dtype)),
                    lambda: xp.asarray(interpolation_matrix(n_in, n_out, mode), dtype=dtype))


def resize_grid(grid, new_hw, mode="bilinear"):
    """grid (h, w, D) -> (h', w', D), interpolating each channel as an image."""
    xp = get_array_module(grid)
    h, w, _ = grid.shape
    Mh = device_matrix(xp, h, new_hw[0], mode, grid.dtype)
    Mw = device_matrix(xp, w, new_hw[1], mode, grid.dtype)
    return xp.einsum("ah,hwd,bw->abd", Mh, grid, Mw)


def resize_table(table, n_new, mode="bilinear"):
    """A 1-D table (n, D) -> (n', D) along its first axis (e.g. the 2-D variant's row table)."""
    xp = get_array_module(table)
    M = device_matrix(xp, table.shape[0], n_new, mode, table.dtype)
    return M @ table


def resize_pos_embed(pos_embed, old_hw, new_hw, num_prefix=1, mode="bilinear"):
    """E_pos (1, num_prefix + h w, D) -> (1, num_prefix + h' w', D), prefix rows (the class
    token's) kept. old_hw / new_hw are patch grids (rows, columns)."""
    _, T, D = pos_embed.shape
    h, w = old_hw
    if T != num_prefix + h * w:
        raise ValueError(f"pos_embed has {T} rows, expected {num_prefix} + {h}x{w}")
    xp = get_array_module(pos_embed)
    grid = pos_embed[0, num_prefix:].reshape(h, w, D)
    new = resize_grid(grid, new_hw, mode).reshape(1, new_hw[0] * new_hw[1], D)
    return xp.concatenate([pos_embed[:, :num_prefix], new], axis=1)


def resize_params(params, cfg_old, cfg_new, mode="bilinear"):
    """params of cfg_old -> params for cfg_new (another image size, the same model otherwise).

    Every position parameter is resized to the new grid: E_pos (learned 1-D), the row and
    column tables (learned 2-D), each block's relative-offset table (2h-1, 2w-1); the rest is
    shared as it is (the patch embedding E does not depend on the image size)."""
    if cfg_old.replace(image_size=cfg_new.image_size) != cfg_new:
        raise ValueError("resize_params changes only image_size; the configs differ otherwise")
    (h, w), (h2, w2) = cfg_old.grid, cfg_new.grid
    out = dict(params)
    for name, v in params.items():
        if name == "pos_embed":
            out[name] = resize_pos_embed(v, (h, w), (h2, w2), int(cfg_old.pool == "cls"), mode)
        elif name == "pos_embed_row":
            out[name] = resize_table(v, h2, mode)
        elif name == "pos_embed_col":
            out[name] = resize_table(v, w2, mode)
        elif name.endswith("rel_pos"):                 # offsets grid, then the class rows
            xp, O, D = get_array_module(v), (2 * h - 1) * (2 * w - 1), v.shape[-1]
            grid = resize_grid(v[:O].reshape(2 * h - 1, 2 * w - 1, D),
                               (2 * h2 - 1, 2 * w2 - 1), mode)
            out[name] = xp.concatenate([grid.reshape(-1, D), v[O:]])
    return out


def resize_images(images, size, mode="bicubic"):
    """images (B, C, H, W) -> (B, C, H', W') with the same separable interpolation (bicubic:
    PyTorch's F.interpolate(mode="bicubic", align_corners=False) without antialias), e.g. to
    fine-tune a 32 px model at 48 px."""
    xp = get_array_module(images)
    B, C, H, W = images.shape
    Mh = device_matrix(xp, H, size[0], mode, images.dtype)
    Mw = device_matrix(xp, W, size[1], mode, images.dtype)
    rows = (images.reshape(B * C * H, W) @ Mw.T).reshape(B * C, H, size[1])  # along W: a GEMM
    return (Mh @ rows).reshape(B, C, *size)                                    # then along H
