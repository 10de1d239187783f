"""A RandAugment-style policy (Cubuk et al. 2020), vectorized over the batch.

Each image gets `n` ops drawn uniformly (with replacement) from OPS, all at one magnitude
m in [0, 30] (f = m / 30) with a random sign where it has one. x is float (B, C, H, W) in [0, 1].

How it runs in few operations (on a GPU each array operation is a kernel launch from Python,
and launches are what the step waits on: BENCHMARKS.md, "GPU (CuPy)"):
- one draw per slot, idx = 2 op + (sign > 0), picks the image's row of a small table made once
  per (magnitude, ops): its geometric matrix, its blend factor, and the parameters of the other
  colour ops (an op an image did not draw has parameters that leave it unchanged exactly);
- the geometric ops (flip, translations, rotation, shears) of all slots compose into ONE affine
  map per image (a product of the slots' matrices), applied once, after the colour ops, with
  one bilinear gather of the four neighbours of every pixel;
- brightness, contrast, colour and sharpness are one blend d + factor (x - d) (PIL's
  ImageEnhance), whose degenerate image d is 0, the mean grey, the grey or the smoothed image
  by the image's table row; solarize is a threshold, posterize a per-image step; equalize and
  autocontrast apply where drawn.
On CuPy, minivit/data/augment_fused.py runs this policy, with the crop, flip, mixing and
erasing after it, as two kernels instead (the same draws and formulas; tested against this).
"""
import math

from ..backend import constant, get_array_module

GEOMETRIC = ("flip", "translate_x", "translate_y", "rotate", "shear_x", "shear_y")
COLOUR = ("brightness", "contrast", "colour", "solarize", "posterize", "equalize",
          "autocontrast", "sharpness")
OPS = ("identity",) + GEOMETRIC + COLOUR
FILL = 0.5                                          # grey outside the source image
DEGENERATE = {"brightness": 0, "contrast": 1, "colour": 2, "sharpness": 3}  # d: 0/mean/grey/smooth
_M, _FACTOR, _D, _THRESH, _UP, _DOWN = slice(0, 9), 9, slice(10, 13), 13, 14, 15  # columns
LUMA = (0.299, 0.587, 0.114)                        # ITU-R 601: the PIL 'L' conversion
POSTERIZE_EPS = 1e-3        # of a level, so that posterize twice = once in floating point too


def _grey(x, luma):
    """Luma (B, 1, H, W): the channels weighted by luma (1, 3, 1, 1), or their mean."""
    return (x * luma).sum(axis=1, keepdims=True) if x.shape[1] == 3 else \
        x.mean(axis=1, keepdims=True)


def equalize(x):
    """Histogram equalisation of each channel of each image over 256 levels."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    q = (x * 255.0 + 0.5).astype(xp.int64).clip(0, 255).reshape(B * C, H * W)
    idx = q + constant(("equalize", xp, B * C), lambda: 256 * xp.arange(B * C)[:, None])
    cdf = xp.bincount(idx.ravel(), minlength=B * C * 256).reshape(B * C, 256).cumsum(axis=1)
    first = xp.take_along_axis(cdf, q.min(axis=1, keepdims=True), axis=1)   # count at min level
    lut = ((cdf - first) / xp.maximum(H * W - first, 1)).astype(x.dtype)     # -> [0, 1]
    out = xp.take_along_axis(lut, q, axis=1)
    flat = (H * W - first) == 0                                              # one-level channel
    return xp.where(flat, x.reshape(B * C, H * W), out).reshape(B, C, H, W)


def autocontrast(x):
    """Stretch each channel of each image to span [0, 1]."""
    xp = get_array_module(x)
    lo = x.min(axis=(2, 3), keepdims=True)
    hi = x.max(axis=(2, 3), keepdims=True)
    return xp.where(hi > lo, (x - lo) / xp.maximum(hi - lo, 1e-12), x)


def smooth(x):
    """PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 (edges repeated outside): the 3x3
    box sum, separable into a row pass and a column pass, plus 4 x."""
    xp = get_array_module(x)
    H, W = x.shape[2:]
    p = xp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    rows = p[..., :W] + p[..., 1:W + 1] + p[..., 2:]                  # (B, C, H + 2, W)
    box = rows[:, :, :H] + rows[:, :, 1:H + 1] + rows[:, :, 2:]
    return (box + 4.0 * x) / 13.0


def _row(name, f, sign, H, W):
    """One table row (host floats): 3x3 map of output pixel coordinates (centred) to source
    coordinates, blend factor, weights of d's (mean grey, grey, smooth), solarize threshold,
    posterize's 255 / step and step / 255 (x -> floor(x 255 / step) step / 255)."""
    M = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    t = math.radians(30.0) * f * sign
    geo = {"flip": ((0, 0, -1.0),), "translate_x": ((0, 2, 0.45 * f * sign * W),),
           "translate_y": ((1, 2, 0.45 * f * sign * H),), "shear_x": ((0, 1, 0.3 * f * sign),),
           "shear_y": ((1, 0, 0.3 * f * sign),),
           "rotate": ((0, 0, math.cos(t)), (0, 1, -math.sin(t)), (1, 0, math.sin(t)),
                      (1, 1, math.cos(t)))}
    for i, j, value in geo.get(name, ()):
        M[i][j] = value
    d = [0.0, 0.0, 0.0]
    if DEGENERATE.get(name, 0):
        d[DEGENERATE[name] - 1] = 1.0
    factor = 1.0 + 0.9 * f * sign if name in DEGENERATE else 1.0      # 0.1 .. 1.9 at m = 30
    thresh = 1.0 - f if name == "solarize" and f > 0 else 2.0         # invert x >= 1 - f (m > 0)
    step = 2.0 ** round(4 * f)                                        # keep 8 - round(4 f) bits
    return sum(M, []) + [factor] + d + [thresh, 255.0 / step, step / 255.0]


def _table(xp, dtype, f, ops, H, W):
    """(2 len(ops), 16) float rows (_row) and (2 len(ops), 3) booleans (equalize, autocontrast,
    posterize); row 2 k + s is op k with sign -1 (s = 0) or +1 (s = 1)."""
    def make():
        rows = [_row(name, f, sign, H, W) for name in ops for sign in (-1.0, 1.0)]
        flags = [[name == "equalize", name == "autocontrast", name == "posterize"]
                 for name in ops for _ in (0, 1)]
        return (xp.asarray(rows, dtype=dtype), xp.asarray(flags, dtype=bool),
                xp.asarray(LUMA, dtype=dtype).reshape(1, 3, 1, 1))
    return constant(("randaug", xp, str(dtype), f, ops, H, W), make)


def colour_ops(x, P, flags, luma):
    """The colour ops of one slot, each image by its table row P (B, 16) and flags (B, 3); an
    image whose op is not a colour op comes out exactly as it went in."""
    xp = get_array_module(x)
    col = lambda a: a[:, None, None, None]                            # noqa: E731 - (B,1,1,1)
    grey = _grey(x, luma)
    w = P[:, _D]
    d = (col(w[:, 0]) * grey.mean(axis=(1, 2, 3), keepdims=True) + col(w[:, 1]) * grey
         + col(w[:, 2]) * smooth(x))                                  # 0 unless a blend op
    x = (d + col(P[:, _FACTOR]) * (x - d)).clip(0.0, 1.0)             # blend (identity: d=0, f=1)
    x = xp.where(x >= col(P[:, _THRESH]), 1.0 - x, x)                 # solarize
    x = xp.where(col(flags[:, 2]), xp.floor(x * col(P[:, _UP]) + POSTERIZE_EPS) * col(P[:, _DOWN]),
                 x)                                                   # posterize
    x = xp.where(col(flags[:, 0]), equalize(x), x)
    return xp.where(col(flags[:, 1]), autocontrast(x), x)


def _sampling(xp, dtype, B, C, H, W):
    """Constants of affine_sample: the homogeneous centred output grid (3, HW), the shift to
    padded source coordinates and their upper bounds (2, 1), the 4 neighbours' offsets (4, 1)
    and each (image, channel)'s first flat index in the padded batch (B, C, 1, 1)."""
    def make():
        v, u = xp.meshgrid(xp.arange(H, dtype=dtype) - (H - 1) / 2,
                           xp.arange(W, dtype=dtype) - (W - 1) / 2, indexing="ij")
        grid = xp.stack([u.ravel(), v.ravel(), xp.ones(H * W, dtype)])
        centre = xp.asarray([[(W - 1) / 2 + 1], [(H - 1) / 2 + 1]], dtype=dtype)
        bounds = xp.asarray([[W + 1], [H + 1]], dtype=dtype)
        itype = xp.int32 if B * C * (H + 3) * (W + 3) < 2 ** 31 else xp.int64
        offsets = xp.asarray([0, 1, W + 3, W + 4], dtype=itype)[:, None]
        base = xp.arange(B * C, dtype=itype).reshape(B, C, 1, 1) * ((H + 3) * (W + 3))
        return grid, centre, bounds, offsets, base
    return constant(("sampling", xp, str(dtype), B, C, H, W), make)


def affine_sample(x, A, fill=FILL):
    """out[b, :, i, j] = bilinear x[b] at A[b] (j, i) (coordinates centred on the image);
    `fill` outside. One sampling pass for the whole composed transform: the image padded with
    `fill` (1 pixel before, 2 after), source points clipped to the padding (where all their
    neighbours are fill), one gather of the 4 neighbours of every output pixel."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    grid, centre, bounds, offsets, base = _sampling(xp, x.dtype, B, C, H, W)
    src = xp.clip(xp.matmul(A[:, :2].astype(x.dtype, copy=False), grid) + centre, 0, bounds)
    corner = xp.floor(src)                                                # (B, 2, HW) padded
    frac = src - corner                                                   # bilinear weights
    corner = corner.astype(base.dtype)
    pos = corner[:, 1] * (W + 3) + corner[:, 0]                           # (B, HW) top-left
    idx = base + (pos[:, None] + offsets)[:, None]                        # (B, C, 4, HW)
    padded = xp.pad(x, ((0, 0), (0, 0), (1, 2), (1, 2)), constant_values=fill)
    vals = xp.take(padded.ravel(), idx)                                   # (B, C, 4, HW)
    g = xp.stack([1.0 - frac, frac], axis=1)                              # (B, 2, 2, HW)
    w = (g[:, :, None, 1] * g[:, None, :, 0]).reshape(B, 1, 4, H * W)      # (dy, dx) order
    return (vals * w).sum(axis=2).reshape(B, C, H, W).astype(x.dtype, copy=False)


def rand_augment(x, rng, n=2, magnitude=9.0, ops=OPS):
    """n random ops of `ops` per image at `magnitude` (0..30); see the module docstring."""
    xp = get_array_module(x)
    B, _, H, W = x.shape
    f = min(max(magnitude, 0.0), 30.0) / 30.0
    table, flag_table, luma = _table(xp, x.dtype, f, tuple(ops), H, W)
    A = None
    for _ in range(n):                                   # n slots (2), not a loop over images
        idx = rng.integers(0, 2 * len(ops), size=B)      # op idx // 2, sign +1 if idx odd
        P, flags = table[idx], flag_table[idx]
        if set(ops) & set(COLOUR):
            x = colour_ops(x, P, flags, luma)
        M = P[:, _M].reshape(B, 3, 3)
        A = M if A is None else xp.matmul(M, A)
    return affine_sample(x, A) if A is not None and set(ops) & set(GEOMETRIC) else x
