"""Augmentation: shapes, determinism, and each transform checked against what it must do."""
import numpy as np
import pytest

from minivit.backend import default_rng
from minivit.data import augment as A
from minivit.data.loader import AugmentConfig, batch_slices, permutation, train_batch
from minivit.data.randaug import OPS, affine_sample, equalize, rand_augment

ALL = AugmentConfig(crop=4, flip=True, randaug_n=2, randaug_m=9, mixup=0.8, cutmix=1.0,
                    erase=0.25)


def images(B=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (B, 3, 32, 32), dtype=np.uint8)


def test_train_batch_shapes_and_determinism():
    x, y = images(), np.arange(16) % 10
    a = train_batch(x, y, default_rng(1), ALL, 10)
    b = train_batch(x, y, default_rng(1), ALL, 10)
    c = train_batch(x, y, default_rng(2), ALL, 10)
    assert a[0].shape == (16, 3, 32, 32) and a[0].dtype == np.float32
    assert a[1].shape == (16, 10)
    np.testing.assert_allclose(a[1].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    plain = train_batch(x, y, default_rng(1), AugmentConfig(crop=0, flip=False), 10)
    np.testing.assert_array_equal(plain[1], y)                     # int labels pass through


def test_random_crop_offsets_cover_every_window_and_no_other():
    """pad p: each of the (2p + 1)^2 windows of the padded image comes up, and only those."""
    x = np.random.default_rng(0).random((500, 1, 6, 6)).astype(np.float32) + 1.0   # no zeros
    out = A.random_crop(x, default_rng(1), pad=2)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    offsets = set()
    for b in range(len(x)):
        hits = [(i, j) for i in range(5) for j in range(5)
                if np.array_equal(out[b], padded[b, :, i:i + 6, j:j + 6])]
        assert len(hits) == 1, f"sample {b}: {hits}"
        offsets.add(hits[0])
    assert offsets == {(i, j) for i in range(5) for j in range(5)}


def test_random_crop_is_a_window_of_the_padded_image():
    x = np.random.default_rng(0).random((6, 3, 32, 32)).astype(np.float32)
    out = A.random_crop(x, default_rng(3), pad=4)
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    offsets = set()
    for b in range(6):
        hits = [(i, j) for i in range(9) for j in range(9)
                if np.array_equal(out[b], padded[b, :, i:i + 32, j:j + 32])]
        assert hits, f"sample {b} is no window"
        offsets.add(hits[0])
    assert len(offsets) > 1


def test_random_flip():
    x = np.random.default_rng(0).random((64, 3, 8, 8))
    out = A.random_flip(x, default_rng(0))
    same = [np.array_equal(o, i) for o, i in zip(out, x, strict=True)]
    mirrored = [np.array_equal(o, i[..., ::-1]) for o, i in zip(out, x, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54


def test_normalize():
    x = np.ones((2, 3, 4, 4), np.float32) * np.array(A.CIFAR10_MEAN, np.float32)[:, None, None]
    np.testing.assert_allclose(A.normalize(x), 0.0, atol=1e-6)
    np.testing.assert_allclose(A.normalize(x + np.float32(A.CIFAR10_STD[0]))[:, 0], 1, rtol=1e-5)


def constant_batch(B=8):
    """Image b is constant b; one-hot targets of class b."""
    x = np.broadcast_to(np.arange(B, dtype=np.float64)[:, None, None, None], (B, 3, 8, 8))
    return x.copy(), A.one_hot(np.arange(B), B, np.float64)


def test_mixup_targets_match_the_mix():
    x, t = constant_batch()
    xm, tm = A.mixup(x, t, default_rng(0), alpha=0.8)
    lam = tm[np.arange(8), np.arange(8)]                             # own-class weight
    np.testing.assert_allclose(xm[:, 0, 0, 0], lam * np.arange(8) + (1 - lam) * np.arange(8)[::-1])
    np.testing.assert_allclose(tm.sum(axis=1), 1.0)


def test_cutmix_targets_match_the_pasted_area():
    x, t = constant_batch()
    xc, tc = A.cutmix(x, t, default_rng(0), alpha=1.0)
    for b in range(8):
        if b == 7 - b:
            continue
        frac = np.mean(xc[b, 0] == 7 - b)                           # pixels from the partner
        assert tc[b, 7 - b] == pytest.approx(frac) and tc[b, b] == pytest.approx(1 - frac)


def test_mix_batch_gives_each_sample_mixup_or_cutmix_with_matching_targets():
    x, t = constant_batch(16)
    xm, tm = A.mix_batch(x, t, default_rng(1), mixup_alpha=0.8, cutmix_alpha=1.0)
    kinds = set()
    for b in range(16):
        own, partner, vals = tm[b, b], tm[b, 15 - b], xm[b, 0]
        assert own + partner == pytest.approx(1.0)
        if np.allclose(vals, vals.flat[0]) and not np.isin(vals, (b, 15 - b)).all():
            kinds.add("mixup")                                        # a blend everywhere
            np.testing.assert_allclose(vals, own * b + (1 - own) * (15 - b))
        else:
            kinds.add("cutmix")                                       # partner inside a box
            assert np.isin(vals, (b, 15 - b)).all()
            assert np.mean(vals == 15 - b) == pytest.approx(partner)
    assert kinds == {"mixup", "cutmix"}


def test_random_erasing_replaces_a_box():
    x = np.zeros((8, 3, 16, 16), np.float32)
    out = A.random_erasing(x, default_rng(0), p=1.0)
    changed = (out != 0).any(axis=1)                                 # (B, H, W)
    for b in range(8):
        rows, cols = np.nonzero(changed[b])
        assert rows.size, "nothing erased"
        box = changed[b, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all(), "erased region is not a box"
        assert rows.size <= 0.45 * 16 * 16          # area <= 1/3, plus whole pixels at the rim
        assert (out[b] != 0).all(axis=0)[changed[b]].all()            # every channel erased
    noise = out[np.broadcast_to(changed[:, None], out.shape)]
    assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1, "not N(0, 1) noise"
    np.testing.assert_array_equal(A.random_erasing(x, default_rng(0), p=0.0), x)


def test_affine_identity_flip_and_translation():
    x = np.random.default_rng(0).random((2, 3, 8, 8))
    eye = np.broadcast_to(np.eye(3), (2, 3, 3))
    np.testing.assert_allclose(affine_sample(x, eye), x, atol=1e-12)
    np.testing.assert_allclose(rand_augment(x, default_rng(0), 1, 9, ops=("flip",)),
                               x[..., ::-1], atol=1e-12)
    m = 2 * 30 / (0.45 * 8)                                          # a 2-pixel shift
    out = rand_augment(x, default_rng(0), 1, m, ops=("translate_x",))
    for b in range(2):
        left = np.allclose(out[b, :, :, :6], x[b, :, :, 2:])        # source = output + 2
        right = np.allclose(out[b, :, :, 2:], x[b, :, :, :6])
        assert left or right
        np.testing.assert_allclose(out[b, :, :, :2] if right else out[b, :, :, 6:], 0.5)


def test_colour_ops():
    x = np.random.default_rng(0).random((4, 3, 8, 8))
    np.testing.assert_allclose(rand_augment(x, default_rng(0), 1, 30, ops=("solarize",)), 1 - x)
    white = np.ones((2, 3, 8, 8))                                    # magnitude 0: no change,
    np.testing.assert_array_equal(rand_augment(white, default_rng(0), 1, 0, ops=("solarize",)),
                                  white)                             # even for pure white
    post = rand_augment(x, default_rng(0), 1, 30, ops=("posterize",)) * 255
    np.testing.assert_allclose(post % 16, 0, atol=1e-9)
    eq = equalize(x ** 3)                                            # skewed -> spread
    assert eq.max() == pytest.approx(1.0) and eq.min() == 0.0
    order = np.argsort((x ** 3)[0, 0].ravel(), kind="stable")
    assert np.all(np.diff(eq[0, 0].ravel()[order]) >= -1e-12)       # monotone in the input


def test_rand_augment_all_ops_deterministic():
    x = np.random.default_rng(0).random((32, 3, 32, 32)).astype(np.float32)
    a = rand_augment(x, default_rng(5), 2, 9)
    np.testing.assert_array_equal(a, rand_augment(x, default_rng(5), 2, 9))
    assert a.shape == x.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert len(OPS) == 15


def test_permutation_and_slices():
    p = permutation(50, default_rng(0))
    assert sorted(p.tolist()) == list(range(50))
    np.testing.assert_array_equal(p, permutation(50, default_rng(0)))
    assert batch_slices(10, 4) == [(0, 4), (4, 8)]
    assert batch_slices(10, 4, drop_last=False) == [(0, 4), (4, 8), (8, 10)]
