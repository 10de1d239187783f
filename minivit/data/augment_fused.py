"""minivit.data.loader.train_batch on CuPy in two kernel launches (minivit/data/augment_cuda.py)
instead of ~200: the same random numbers, drawn from the same generator in the same order as
the plain pipeline (loader.augment_images, then loader.mix_normalize_erase), and the same
formulas applied to them. tests/test_augment_fused_cpu.py checks it against the plain
pipeline on the CPU, with the kernels' CUDA text run there; MINIVIT_FUSED=0 turns it off.
"""
import os

import numpy as np

from ..kernels_cupy import compiled
from .augment import CIFAR10_MEAN, CIFAR10_STD
from .augment_cuda import AUGMENT_SRC, NAMES
from .randaug import COLOUR, GEOMETRIC, OPS, _table

ERASE_AREA = (0.02, 1 / 3)                  # augment.random_erasing's default
FLIP_P = 0.5                                # augment.random_flip's default
MAX_PIXELS = 64 * 64                        # larger images: the plain pipeline (enabled)
FMAD = ("--fmad=false",)    # a * b + c rounded twice, as the plain path's separate kernels do
_cache = {}


def enabled(images_u8, dtype) -> bool:
    """True for a CuPy uint8 (B, 3, H, W) batch made into float32/float64 with fused kernels on
    (MINIVIT_FUSED != "0"); 3 channels: normalisation's CIFAR-10 mean and std. Images up to
    MAX_PIXELS only: a warp per image walks its pixels ~8 times, which pays at CIFAR's 32 x 32
    but would leave a GPU mostly idle at 224 x 224 (fine-tuning), where the plain path runs."""
    return (type(images_u8).__module__.split(".")[0] == "cupy"
            and os.environ.get("MINIVIT_FUSED") != "0" and images_u8.dtype.char == "B"
            and images_u8.ndim == 4 and images_u8.shape[1] == len(CIFAR10_MEAN)
            and images_u8.shape[2] * images_u8.shape[3] <= MAX_PIXELS
            and np.dtype(dtype).name in ("float32", "float64"))


def _cp():
    import cupy  # noqa: PLC0415 - only reached with CuPy arrays
    return cupy


def _kernel(name, dtype):
    return compiled(AUGMENT_SRC, NAMES, name, dtype, FMAD)


def _constants(xp, dtype, C):
    """A one-element placeholder per pointer type (arguments a configuration does not use;
    the kernels never read them) and normalisation's (2, C) mean and std."""
    key = ("fused_augment", xp, str(dtype), C)
    if key not in _cache:
        stats = xp.asarray([CIFAR10_MEAN, CIFAR10_STD], dtype=dtype)
        ph = {k: xp.zeros(1, dtype if k == "T" else k) for k in ("T", "int64", "float64")}
        _cache[key] = (ph, stats)
    return _cache[key]


def draw(rng, aug, B, C, H, W, dtype):
    """Every random number the plain pipeline draws for a batch, in its order (randaug's slots,
    crop, flip, mix_batch's, random_erasing's), None where a step is off."""
    r = lambda: rng.random(B, dtype=dtype)                            # noqa: E731
    beta = lambda a: rng.beta(a, a, size=B)                           # noqa: E731 - float64
    d = {"slots": [rng.integers(0, 2 * len(OPS), size=B) for _ in range(aug.randaug_n)]}
    d["crop"] = [rng.integers(0, 2 * aug.crop + 1, size=B) for _ in "yx"] if aug.crop else None
    d["flip"] = r() if aug.flip else None
    d["lam"] = beta(aug.mixup) if aug.mixup else None
    d["cut"] = [beta(aug.cutmix), r(), r()] if aug.cutmix else None   # area's beta, centre
    d["cut_u"] = r() if aug.mixup and aug.cutmix else None            # cutmix or mixup
    d["erase"] = [r(), r(), r(), r(), rng.standard_normal((B, C, H, W), dtype=dtype)] \
        if aug.erase else None                                        # area, centre, p, noise
    return d


def augment_images(images_u8, d, aug, dtype):
    """loader.augment_images with the draws d: one launch of randaug_crop_flip."""
    cp = _cp()
    B, C, H, W = images_u8.shape
    ph, _ = _constants(cp, dtype, C)
    T = cp.dtype(dtype).type
    f = min(max(aug.randaug_m, 0.0), 30.0) / 30.0
    table, flags, luma = _table(cp, cp.dtype(dtype), f, OPS, H, W)
    slots = d["slots"]
    slots = cp.stack(slots) if len(slots) > 1 else slots[0] if slots else ph["int64"]
    oy, ox = d["crop"] or (ph["int64"], ph["int64"])
    out = cp.empty((B, C, H, W), dtype)
    work = cp.empty((2, B, C, H, W), dtype)                 # the colour passes' two buffers
    hist = cp.empty((B, C, 257), cp.int32)                  # equalize's cdf per channel
    args = (cp.ascontiguousarray(images_u8), out, work, hist, slots, table, flags, luma, oy, ox,
            ph["T"] if d["flip"] is None else d["flip"], T(FLIP_P if aug.flip else 0),
            *(cp.int32(v) for v in (B, C, H, W, len(d["slots"]), bool(set(OPS) & set(COLOUR)),
                                    bool(d["slots"]) and bool(set(OPS) & set(GEOMETRIC)),
                                    aug.crop)))
    _kernel("randaug_crop_flip", dtype)((B,), (32,), args)
    return out


def mix_normalize_erase(x, labels, d, aug, num_classes):
    """loader.mix_normalize_erase with the draws d: one launch of mix_normalize_erase."""
    cp = _cp()
    B, C, H, W = x.shape
    ph, stats = _constants(cp, x.dtype, C)
    T = x.dtype.type
    mixing = bool(aug.mixup or aug.cutmix)
    targets = cp.empty((B, num_classes), x.dtype) if mixing else labels
    cut = d["cut"] or [ph["float64"], ph["T"], ph["T"]]
    erase = d["erase"] or [ph["T"]] * 5
    out = cp.empty_like(x)
    args = (x, out, targets if mixing else ph["T"], cp.ascontiguousarray(labels, cp.int64),
            ph["float64"] if d["lam"] is None else d["lam"], *cut,
            ph["T"] if d["cut_u"] is None else d["cut_u"], *erase, stats,
            *(cp.int32(v) for v in (B, C, H, W, num_classes, bool(aug.mixup), bool(aug.cutmix))),
            T(aug.erase), T(ERASE_AREA[0]), T(ERASE_AREA[1] - ERASE_AREA[0]))
    _kernel("mix_normalize_erase", x.dtype)((B,), (32,), args)
    return out, targets


def train_batch(images_u8, labels, rng, aug, num_classes, dtype):
    """loader.train_batch in two launches (plus the draws): (images, targets)."""
    B, C, H, W = images_u8.shape
    d = draw(rng, aug, B, C, H, W, dtype)
    x = augment_images(images_u8, d, aug, dtype)
    return mix_normalize_erase(x, labels, d, aug, num_classes)
