"""A RandAugment-style policy (Cubuk et al. 2020), vectorized over the batch.

Each image gets `n` ops drawn uniformly (with replacement) from OPS, all at one magnitude
m in [0, 30] (f = m / 30) with a random sign where it has one. The geometric ops (flip,
translations, rotation, shears) of all n slots are composed into ONE affine map per image and
applied once with bilinear sampling, after the colour ops; the colour ops (brightness,
contrast, colour, solarize, posterize, equalize, autocontrast, sharpness) are elementwise or
per-image statistics, each applied to the images that drew it (a mask, not a loop).
x is float (B, C, H, W) in [0, 1].
"""
import math

from ..backend import get_array_module

GEOMETRIC = ("flip", "translate_x", "translate_y", "rotate", "shear_x", "shear_y")
COLOUR = ("brightness", "contrast", "colour", "solarize", "posterize", "equalize",
          "autocontrast", "sharpness")
OPS = ("identity",) + GEOMETRIC + COLOUR
FILL = 0.5                                          # grey outside the source image


def _sel(mask, new, old):
    xp = get_array_module(old)
    return xp.where(mask.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)


def _grey(x):
    """Luma (B, 1, H, W) with ITU-R 601 weights (the PIL 'L' conversion)."""
    return 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3] if x.shape[1] == 3 else \
        x.mean(axis=1, keepdims=True)


def _blend(a, b, factor):
    """b + factor (a - b) per image, clipped to [0, 1] (PIL ImageEnhance's interpolation)."""
    return (b + factor[:, None, None, None] * (a - b)).clip(0.0, 1.0)


def equalize(x):
    """Histogram equalisation of each channel of each image over 256 levels."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    q = (x * 255.0 + 0.5).astype(xp.int64).clip(0, 255).reshape(B * C, H * W)
    idx = q + 256 * xp.arange(B * C)[:, None]
    cdf = xp.bincount(idx.ravel(), minlength=B * C * 256).reshape(B * C, 256).cumsum(axis=1)
    first = xp.take_along_axis(cdf, q.min(axis=1, keepdims=True), axis=1)   # count at min level
    lut = (cdf - first) / xp.maximum(H * W - first, 1)                       # -> [0, 1]
    out = xp.take_along_axis(lut, q, axis=1).astype(x.dtype)
    flat = (H * W - first) == 0                                              # one-level channel
    return xp.where(flat, x.reshape(B * C, H * W), out).reshape(B, C, H, W)


def autocontrast(x):
    """Stretch each channel of each image to span [0, 1]."""
    xp = get_array_module(x)
    lo = x.min(axis=(2, 3), keepdims=True)
    hi = x.max(axis=(2, 3), keepdims=True)
    return xp.where(hi > lo, (x - lo) / xp.maximum(hi - lo, 1e-12), x)


def smooth(x):
    """PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, borders kept as they are."""
    xp = get_array_module(x)
    p = xp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    H, W = x.shape[2:]
    s = sum(p[:, :, i:i + H, j:j + W] for i in range(3) for j in range(3)) + 4 * x
    return s / 13.0


def _colour_op(name, x, f, sign):
    xp = get_array_module(x)
    factor = 1.0 + 0.9 * f * sign                                        # 0.1 .. 1.9 at m = 30
    if name == "brightness":
        return _blend(x, xp.zeros_like(x), factor)
    if name == "contrast":
        return _blend(x, _grey(x).mean(axis=(1, 2, 3), keepdims=True) + 0 * x, factor)
    if name == "colour":
        return _blend(x, _grey(x) + 0 * x, factor)
    if name == "sharpness":
        return _blend(x, smooth(x), factor)
    if name == "solarize":
        return xp.where(x >= 1.0 - f, 1.0 - x, x)                        # invert above 1 - f
    if name == "posterize":
        bits = 8 - int(round(4 * f))                                     # keep 4..8 bits
        step = 2 ** (8 - bits)
        return (xp.floor(x * 255.0 / step) * step / 255.0).astype(x.dtype)
    if name == "equalize":
        return equalize(x)
    return autocontrast(x)


def _geometric_matrix(name, B, f, sign, H, W, xp, dtype):
    """(B, 3, 3) maps of output pixel coordinates (centred) to source coordinates."""
    M = xp.broadcast_to(xp.eye(3, dtype=dtype), (B, 3, 3)).copy()
    if name == "flip":
        M[:, 0, 0] = -1.0
    elif name == "translate_x":
        M[:, 0, 2] = 0.45 * f * sign * W
    elif name == "translate_y":
        M[:, 1, 2] = 0.45 * f * sign * H
    elif name == "rotate":
        t = math.radians(30.0) * f * sign
        M[:, 0, 0], M[:, 0, 1], M[:, 1, 0], M[:, 1, 1] = xp.cos(t), -xp.sin(t), xp.sin(t), \
            xp.cos(t)
    elif name == "shear_x":
        M[:, 0, 1] = 0.3 * f * sign
    else:
        M[:, 1, 0] = 0.3 * f * sign
    return M


def affine_sample(x, A, fill=FILL):
    """out[b, :, i, j] = bilinear x[b] at A[b] (j, i) (coordinates centred on the image);
    `fill` outside. One sampling pass for the whole composed transform."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    cy, cx = (H - 1) / 2, (W - 1) / 2
    v, u = xp.meshgrid(xp.arange(H, dtype=x.dtype) - cy, xp.arange(W, dtype=x.dtype) - cx,
                       indexing="ij")
    a = A[:, :2, :, None, None]                                           # (B, 2, 3, 1, 1)
    sx = a[:, 0, 0] * u + a[:, 0, 1] * v + a[:, 0, 2] + cx                # (B, H, W)
    sy = a[:, 1, 0] * u + a[:, 1, 1] * v + a[:, 1, 2] + cy
    x0, y0 = xp.floor(sx), xp.floor(sy)
    b = xp.arange(B)[:, None, None]
    out = 0.0
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            w = (1 - abs(sx - xi)) * (1 - abs(sy - yi))                   # bilinear weight
            ok = (xi >= 0) & (xi <= W - 1) & (yi >= 0) & (yi <= H - 1)
            xc = xi.clip(0, W - 1).astype(xp.int64)
            yc = yi.clip(0, H - 1).astype(xp.int64)
            val = xp.where(ok[..., None], x[b, :, yc, xc], fill)          # (B, H, W, C)
            out = out + w[..., None] * val
    return out.transpose(0, 3, 1, 2).astype(x.dtype)


def rand_augment(x, rng, n=2, magnitude=9.0, ops=OPS):
    """n random ops of `ops` per image at `magnitude` (0..30); see the module docstring."""
    xp = get_array_module(x)
    B, _, H, W = x.shape
    f = min(max(magnitude, 0.0), 30.0) / 30.0
    A = xp.broadcast_to(xp.eye(3, dtype=x.dtype), (B, 3, 3)).copy()
    geometric = False
    for _ in range(n):                                   # n slots (2), not a loop over images
        op = rng.integers(0, len(ops), size=B)
        sign = xp.where(rng.random(B, dtype=x.dtype) < 0.5, -1.0, 1.0).astype(x.dtype)
        for k, name in enumerate(ops):
            chosen = op == k
            if name in COLOUR:
                x = _sel(chosen, _colour_op(name, x, f, sign), x)
            elif name in GEOMETRIC:
                M = _geometric_matrix(name, B, f, sign, H, W, xp, x.dtype)
                A = xp.matmul(_sel(chosen, M, xp.broadcast_to(xp.eye(3, dtype=x.dtype),
                                                               (B, 3, 3))), A)
                geometric = True
    return affine_sample(x, A) if geometric else x
