"""Batch augmentation on backend arrays (B, C, H, W), vectorized: no Python loop per image.

Every random choice is drawn from `rng`, a backend generator (minivit.backend.default_rng),
so a given seed gives the same batch. Images are floats in [0, 1] until `normalize`.
"""
from ..backend import get_array_module

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def to_float(images_u8, dtype="float32"):
    """uint8 (B, C, H, W) -> floats in [0, 1]."""
    return images_u8.astype(dtype) * (1.0 / 255.0)


def normalize(x, mean=CIFAR10_MEAN, std=CIFAR10_STD):
    """(x - mean_c) / std_c per channel c."""
    xp = get_array_module(x)
    m = xp.asarray(mean, dtype=x.dtype).reshape(1, -1, 1, 1)
    s = xp.asarray(std, dtype=x.dtype).reshape(1, -1, 1, 1)
    return (x - m) / s


def random_crop(x, rng, pad=4):
    """Zero-pad by `pad` on each side, then take one random H x W window per image."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    xpad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oy = rng.integers(0, 2 * pad + 1, size=B)                        # window offsets (B,)
    ox = rng.integers(0, 2 * pad + 1, size=B)
    rows = (oy[:, None] + xp.arange(H))[:, None, :, None]            # (B, 1, H, 1)
    cols = (ox[:, None] + xp.arange(W))[:, None, None, :]            # (B, 1, 1, W)
    return xpad[xp.arange(B)[:, None, None, None], xp.arange(C)[None, :, None, None], rows, cols]


def random_flip(x, rng, p=0.5):
    """Mirror each image left-right with probability p."""
    xp = get_array_module(x)
    flip = rng.random(x.shape[0], dtype=x.dtype) < p
    return xp.where(flip[:, None, None, None], x[..., ::-1], x)


def one_hot(labels, num_classes, dtype):
    xp = get_array_module(labels)
    return (labels[:, None] == xp.arange(num_classes)).astype(dtype)


def _beta(rng, alpha, size, dtype):
    return rng.beta(alpha, alpha, size=size).astype(dtype)


def mixup(x, targets, rng, alpha=0.8):
    """x_b <- lam_b x_b + (1 - lam_b) x_b', the same for targets (B, K); b' is the batch reversed,
    lam_b ~ Beta(alpha, alpha) per sample (Zhang et al. 2018)."""
    lam = _beta(rng, alpha, x.shape[0], x.dtype)
    lx = lam[:, None, None, None]
    x = lx * x + (1 - lx) * x[::-1]
    targets = lam[:, None] * targets + (1 - lam[:, None]) * targets[::-1]
    return x, targets


def _boxes(rng, B, H, W, area):
    """Per-sample boxes of relative area `area` (B,), centred uniformly, clipped to the image:
    a (B, 1, H, W) boolean mask and the clipped boxes' true area fraction (B,)."""
    xp = get_array_module(area)
    h = xp.sqrt(area) * H
    w = xp.sqrt(area) * W
    cy = rng.random(B, dtype=area.dtype) * H
    cx = rng.random(B, dtype=area.dtype) * W
    ys = xp.arange(H, dtype=area.dtype)[None, :, None] + 0.5
    xs = xp.arange(W, dtype=area.dtype)[None, None, :] + 0.5
    inside = ((xp.abs(ys - cy[:, None, None]) < h[:, None, None] / 2)
              & (xp.abs(xs - cx[:, None, None]) < w[:, None, None] / 2))          # (B, H, W)
    return inside[:, None], inside.mean(axis=(1, 2)).astype(area.dtype)


def cutmix(x, targets, rng, alpha=1.0):
    """Paste a box of the reversed batch into each image (Yun et al. 2019); targets mix by the
    pasted area: t_b <- (1 - a_b) t_b + a_b t_b'."""
    B, _, H, W = x.shape
    xp = get_array_module(x)
    area = 1 - _beta(rng, alpha, B, x.dtype)
    mask, frac = _boxes(rng, B, H, W, area)
    x = xp.where(mask, x[::-1], x)
    targets = (1 - frac[:, None]) * targets + frac[:, None] * targets[::-1]
    return x, targets


def mix_batch(x, targets, rng, mixup_alpha=0.0, cutmix_alpha=0.0):
    """timm-style: with both on, each sample gets cutmix or mixup (half each); pairs are (b, b').

    For simplicity both are computed and one is chosen per sample; targets follow the choice."""
    xp = get_array_module(x)
    if mixup_alpha and cutmix_alpha:
        xm, tm = mixup(x, targets, rng, mixup_alpha)
        xc, tc = cutmix(x, targets, rng, cutmix_alpha)
        use_cut = rng.random(x.shape[0], dtype=x.dtype) < 0.5
        return (xp.where(use_cut[:, None, None, None], xc, xm),
                xp.where(use_cut[:, None], tc, tm))
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
