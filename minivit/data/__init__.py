"""CIFAR-10 loading (md5-checked, safe extraction, restricted unpickling) and augmentation."""
from .augment import CIFAR10_MEAN, CIFAR10_STD, normalize
from .cifar import MD5, URL, default_data_dir, load_cifar10
from .loader import AugmentConfig, batch_slices, eval_batch, permutation, train_batch

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "MD5", "URL", "AugmentConfig", "batch_slices",
           "default_data_dir", "eval_batch", "load_cifar10", "normalize", "permutation",
           "train_batch"]
