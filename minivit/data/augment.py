"""Batch augmentation on backend arrays (B, C, H, W), vectorized: no Python loop per image.

Every random choice is drawn from `rng`, a backend generator (minivit.backend.default_rng),
so a given seed gives the same batch. Images are floats in [0, 1] until `normalize`.
"""
from ..backend import arange, constant, get_array_module

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def to_float(images_u8, dtype="float32"):
    """uint8 (B, C, H, W) -> floats in [0, 1]."""
    return images_u8.astype(dtype) * (1.0 / 255.0)


def normalize(x, mean=CIFAR10_MEAN, std=CIFAR10_STD):
    """(x - mean_c) / std_c per channel c."""
    xp = get_array_module(x)
    m, s = constant(("normalize", xp, str(x.dtype), tuple(mean), tuple(std)),
                    lambda: (xp.asarray(mean, dtype=x.dtype).reshape(1, -1, 1, 1),
                             xp.asarray(std, dtype=x.dtype).reshape(1, -1, 1, 1)))
    return (x - m) / s


def random_crop(x, rng, pad=4):
    """Zero-pad by `pad` on each side, then take one random H x W window per image."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    xpad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oy = rng.integers(0, 2 * pad + 1, size=B)                        # window offsets (B,)
    ox = rng.integers(0, 2 * pad + 1, size=B)
    rows = (oy[:, None] + arange(xp, H))[:, None, :, None]           # (B, 1, H, 1)
    cols = (ox[:, None] + arange(xp, W))[:, None, None, :]           # (B, 1, 1, W)
    return xpad[arange(xp, B)[:, None, None, None], arange(xp, C)[None, :, None, None], rows,
                cols]


def random_flip(x, rng, p=0.5):
    """Mirror each image left-right with probability p."""
    xp = get_array_module(x)
    flip = rng.random(x.shape[0], dtype=x.dtype) < p
    return xp.where(flip[:, None, None, None], x[..., ::-1], x)


def one_hot(labels, num_classes, dtype):
    xp = get_array_module(labels)
    return (labels[:, None] == arange(xp, num_classes)).astype(dtype)


def _beta(rng, alpha, size, dtype):
    return rng.beta(alpha, alpha, size=size).astype(dtype)


def _paste(x, targets, keep, box, share):
    """x_b <- keep_b x_b + (1 - keep_b) x_b' (keep None: x_b), then x_b' inside `box`
    (B, 1, H, W) (None: nowhere); t_b <- (1 - share_b) t_b + share_b t_b'. b' is the batch
    reversed."""
    xp = get_array_module(x)
    xr = x[::-1]
    if keep is not None:
        k = keep[:, None, None, None]
        x = k * x + (1 - k) * xr
    if box is not None:
        x = xp.where(box, xr, x)
    s = share[:, None]
    return x, (1 - s) * targets + s * targets[::-1]


def mixup(x, targets, rng, alpha=0.8):
    """x_b <- lam_b x_b + (1 - lam_b) x_b', the same for targets (B, K); b' is the batch reversed,
    lam_b ~ Beta(alpha, alpha) per sample (Zhang et al. 2018)."""
    lam = _beta(rng, alpha, x.shape[0], x.dtype)
    return _paste(x, targets, lam, None, 1 - lam)


def _boxes(rng, B, H, W, area):
    """Per-sample boxes of relative area `area` (B,), centred uniformly, clipped to the image:
    a (B, 1, H, W) boolean mask and the clipped boxes' true area fraction (B,)."""
    xp = get_array_module(area)
    side = xp.sqrt(area)[:, None, None]                               # box side / image side
    cy = rng.random(B, dtype=area.dtype) * H
    cx = rng.random(B, dtype=area.dtype) * W
    ys = arange(xp, H, area.dtype, 0.5)[None, :, None]                # pixel centres
    xs = arange(xp, W, area.dtype, 0.5)[None, None, :]
    inside = ((xp.abs(ys - cy[:, None, None]) < side * (H / 2))      # within half the height
              & (xp.abs(xs - cx[:, None, None]) < side * (W / 2)))             # (B, H, W)
    return inside[:, None], inside.mean(axis=(1, 2)).astype(area.dtype)


def cutmix(x, targets, rng, alpha=1.0):
    """Paste a box of the reversed batch into each image (Yun et al. 2019); targets mix by the
    pasted area: t_b <- (1 - a_b) t_b + a_b t_b'."""
    B, _, H, W = x.shape
    mask, frac = _boxes(rng, B, H, W, 1 - _beta(rng, alpha, B, x.dtype))
    return _paste(x, targets, None, mask, frac)


def mix_batch(x, targets, rng, mixup_alpha=0.0, cutmix_alpha=0.0):
    """timm-style: with both on, each sample gets cutmix or mixup (half each); pairs are (b, b').
    Both in one pass: a cutmix sample keeps all of its own image outside its box (keep 1)."""
    if mixup_alpha and cutmix_alpha:
        xp = get_array_module(x)
        B, _, H, W = x.shape
        lam = _beta(rng, mixup_alpha, B, x.dtype)
        mask, frac = _boxes(rng, B, H, W, 1 - _beta(rng, cutmix_alpha, B, x.dtype))
        cut = rng.random(B, dtype=x.dtype) < 0.5
        keep = xp.where(cut, 1.0, lam).astype(x.dtype, copy=False)
        return _paste(x, targets, keep, mask & cut[:, None, None, None],
                      xp.where(cut, frac, 1 - keep))
    if mixup_alpha:
        return mixup(x, targets, rng, mixup_alpha)
    if cutmix_alpha:
        return cutmix(x, targets, rng, cutmix_alpha)
    return x, targets


def random_erasing(x, rng, p=0.25, area=(0.02, 1 / 3)):
    """With probability p, replace a random box (relative area in `area`) by N(0, 1) noise
    (Zhong et al. 2020); applied after normalisation, so the noise matches the data's scale."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    a = area[0] + (area[1] - area[0]) * rng.random(B, dtype=x.dtype)
    mask, _ = _boxes(rng, B, H, W, a)
    mask &= (rng.random(B, dtype=x.dtype) < p)[:, None, None, None]
    return xp.where(mask, rng.standard_normal(x.shape, dtype=x.dtype), x)
