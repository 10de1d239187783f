"""Shuffled mini-batches from arrays already on the backend, and the train/eval pipelines.

The whole uint8 data set lives on the backend once (150 MB for CIFAR-10's train set), so a
training step only indexes it: no host<->device copy per batch.
"""
from dataclasses import dataclass

from ..backend import get_array_module
from . import augment, augment_fused
from .randaug import rand_augment


@dataclass(frozen=True)
class AugmentConfig:
    crop: int = 4                 # random-crop padding in pixels (0: off)
    flip: bool = True             # random horizontal flip
    randaug_n: int = 0            # RandAugment: ops per image (0: off)
    randaug_m: float = 9.0        # ... and their magnitude, 0..30 as in the paper's scale
    mixup: float = 0.0            # Beta(alpha, alpha) of mixup (0: off)
    cutmix: float = 0.0           # Beta(alpha, alpha) of cutmix (0: off)
    erase: float = 0.0            # random-erasing probability (0: off)


def permutation(n, rng):
    """A random permutation of range(n) on the backend (argsort of uniforms: any backend)."""
    u = rng.random(n)
    return get_array_module(u).argsort(u)


def batch_slices(n, batch_size, drop_last=True):
    """[(start, stop)] covering range(n) in order; the short tail is dropped when asked."""
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [(s, min(s + batch_size, stop)) for s in range(0, stop, batch_size)]


def train_batch(images_u8, labels, rng, aug: AugmentConfig, num_classes, dtype="float32"):
    """uint8 (B, C, H, W) + int labels -> (normalised float images, targets): targets are the
    int labels, or (B, K) soft targets when mixup/cutmix are on. On CuPy this is two fused
    kernels (minivit/data/augment_fused.py) drawing the same random numbers."""
    if augment_fused.enabled(images_u8, dtype):
        return augment_fused.train_batch(images_u8, labels, rng, aug, num_classes, dtype)
    return mix_normalize_erase(augment_images(images_u8, rng, aug, dtype), labels, rng, aug,
                               num_classes)


def augment_images(images_u8, rng, aug: AugmentConfig, dtype="float32"):
    """Each image on its own: to [0, 1], RandAugment, crop, flip."""
    x = augment.to_float(images_u8, dtype)
    if aug.randaug_n:
        x = rand_augment(x, rng, aug.randaug_n, aug.randaug_m)
    if aug.crop:
        x = augment.random_crop(x, rng, aug.crop)
    if aug.flip:
        x = augment.random_flip(x, rng)
    return x


def mix_normalize_erase(x, labels, rng, aug: AugmentConfig, num_classes):
    """Across the batch (mixup / cutmix with the reversed batch), then normalise and erase."""
    targets = labels
    if aug.mixup or aug.cutmix:
        targets = augment.one_hot(labels, num_classes, x.dtype)
        x, targets = augment.mix_batch(x, targets, rng, aug.mixup, aug.cutmix)
    x = augment.normalize(x)
    if aug.erase:
        x = augment.random_erasing(x, rng, aug.erase)
    return x, targets


def eval_batch(images_u8, dtype="float32"):
    """uint8 (B, C, H, W) -> normalised floats, no randomness."""
    return augment.normalize(augment.to_float(images_u8, dtype))
