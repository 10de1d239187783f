"""The fused augmentation (minivit/data/augment_fused.py) against the plain pipeline, on the
CPU: the kernels' CUDA text (minivit/data/augment_cuda.py) runs with each warp emulated by 32
threads (tests/cpu_kernels.py), behind the real Python wrapper. Skipped without g++; on a GPU,
tests/test_cupy_paths.py runs the same comparison with CuPy."""
import os
import sys

import numpy as np
import pytest
from cpu_kernels import CXX, emulate_augment_fused

from minivit.backend import default_rng
from minivit.data import augment_fused, loader
from minivit.data.loader import AugmentConfig
from minivit.data.randaug import OPS

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
from kernel_standins import Recording, Replay  # noqa: E402

pytestmark = pytest.mark.skipif(CXX is None, reason="needs g++")
FULL = AugmentConfig(crop=4, flip=True, randaug_n=2, randaug_m=9, mixup=0.8, cutmix=1.0,
                     erase=0.25)
CONFIGS = {
    "full": FULL,
    "mixup only": AugmentConfig(mixup=0.8, erase=0.5),
    "cutmix only": AugmentConfig(crop=2, cutmix=1.0),
    "crop and flip": AugmentConfig(),
    "nothing": AugmentConfig(crop=0, flip=False),
    "randaug 3 at 30": AugmentConfig(randaug_n=3, randaug_m=30, flip=False),
}
TOL = {"float64": 1e-12, "float32": 3e-5}


def images(B, seed=0, H=32, W=32):
    return np.random.default_rng(seed).integers(0, 256, (B, 3, H, W), dtype=np.uint8)


def both(fn, monkeypatch):
    """fn() on the plain pipeline, then with the fused kernels emulated."""
    plain = fn()
    with monkeypatch.context() as m:
        emulate_augment_fused(m)
        fused = fn()
    return plain, fused


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_train_batch_matches_the_plain_pipeline(name, dtype, monkeypatch):
    """Same seed, same draws, same images and targets (train_batch as the runner calls it)."""
    u8, labels = images(24, seed=1), np.random.default_rng(2).integers(0, 10, 24)
    plain, fused = both(lambda: loader.train_batch(u8, labels, default_rng(3), CONFIGS[name],
                                                   10, dtype), monkeypatch)
    for p, f in zip(plain, fused, strict=True):
        assert f.dtype == p.dtype and f.shape == p.shape
        np.testing.assert_allclose(f, p, rtol=0, atol=TOL[dtype])


def slot_draws(B, seed=0):
    """Two slots covering every table row (op, sign), each row paired with several others."""
    rows = 2 * len(OPS)
    g = np.random.default_rng(seed)
    return [np.arange(B) % rows, g.integers(0, rows, B)]


@pytest.mark.parametrize("magnitude", [0, 9, 30])
def test_every_randaug_op_and_sign(magnitude, monkeypatch):
    """Every op at both signs, crop and flip: the images half against the plain one, given the
    same draws (a flat channel in one image: equalize and autocontrast leave it)."""
    B = 2 * 2 * len(OPS)
    u8 = images(B, seed=magnitude)
    u8[5, 1] = 77                                                     # one level
    u8[7] = 200
    g = np.random.default_rng(4)
    draws = slot_draws(B) + [g.integers(0, 9, B), g.integers(0, 9, B), g.random(B)]
    aug = AugmentConfig(randaug_n=2, randaug_m=magnitude)
    d = {"slots": draws[:2], "crop": draws[2:4], "flip": draws[4], "lam": None, "cut": None,
         "cut_u": None, "erase": None}
    plain = loader.augment_images(u8, Replay(draws), aug, "float64")
    with monkeypatch.context() as m:
        emulate_augment_fused(m)
        fused = augment_fused.augment_images(u8, d, aug, "float64")
    np.testing.assert_allclose(fused, plain, rtol=0, atol=1e-12)
    assert np.abs(plain - u8 / 255).max() > 0.5                      # it did transform


def test_mix_normalize_erase_on_odd_sizes(monkeypatch):
    """The batch half alone: an odd batch (the middle image its own partner), a non-square
    image, K = 3; augment_fused.draw reads the plain half's draws back in the same order."""
    B, H, W = 7, 12, 20
    aug = AugmentConfig(crop=0, flip=False, mixup=0.8, cutmix=1.0, erase=0.5)
    x = np.random.default_rng(5).random((B, 3, H, W))
    labels = np.random.default_rng(6).integers(0, 3, B)
    rec = Recording(default_rng(7))
    plain = loader.mix_normalize_erase(x, labels, rec, aug, 3)
    d = augment_fused.draw(Replay(rec.draws), aug, B, 3, H, W, "float64")
    with monkeypatch.context() as m:
        emulate_augment_fused(m)
        fused = augment_fused.mix_normalize_erase(x, labels, d, aug, 3)
    for p, f in zip(plain, fused, strict=True):
        np.testing.assert_allclose(f, p, rtol=0, atol=1e-12)
    assert not np.allclose(fused[1], np.eye(3)[labels])               # targets were mixed


def test_the_draws_are_the_plain_pipelines(monkeypatch):
    """augment_fused.draw asks the generator for what the plain pipeline asks, in its order:
    after a batch both generators are in the same state."""
    u8, labels = images(6), np.arange(6)
    states = []
    for fused in (False, True):
        rng = default_rng(11)
        with monkeypatch.context() as m:
            if fused:
                emulate_augment_fused(m)
            loader.train_batch(u8, labels, rng, FULL, 10, "float32")
        states.append(rng.random(4))
    np.testing.assert_array_equal(*states)


def test_enabled_only_for_cupy_batches(monkeypatch):
    u8 = images(2)
    assert not augment_fused.enabled(u8, "float32")                  # NumPy: the plain path
    fake = type("ndarray", (), {"__module__": "cupy._core.core", "dtype": u8.dtype,
                                "ndim": 4, "shape": u8.shape})()
    assert augment_fused.enabled(fake, "float32") and augment_fused.enabled(fake, np.float64)
    assert not augment_fused.enabled(fake, "float16")
    fake.shape = (2, 3, 224, 224)                                     # fine-tuning's: plain
    assert not augment_fused.enabled(fake, "float32")
    fake.shape = u8.shape
    monkeypatch.setenv("MINIVIT_FUSED", "0")
    assert not augment_fused.enabled(fake, "float32")
