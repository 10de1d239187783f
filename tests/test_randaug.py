"""RandAugment against a per-image reference written from the ops' definitions (PIL's).

rand_augment runs every image's ops together through a table and few array operations
(minivit/data/randaug.py); here each image is done alone, op by op, from the formulas.
"""
import math

import numpy as np
import pytest

from minivit.backend import default_rng
from minivit.data.randaug import (
    COLOUR,
    GEOMETRIC,
    OPS,
    affine_sample,
    rand_augment,
)

LUMA = np.array([0.299, 0.587, 0.114])


def bilinear_reference(img, A, fill=0.5):
    """img (C, H, W) sampled at A (3, 3) (u, v, 1) for every output pixel, pixel by pixel."""
    C, H, W = img.shape
    cy, cx = (H - 1) / 2, (W - 1) / 2
    out = np.empty_like(img)
    for i in range(H):
        for j in range(W):
            sx, sy, _ = A @ [j - cx, i - cy, 1.0]
            sx, sy = sx + cx, sy + cy
            x0, y0 = math.floor(sx), math.floor(sy)
            acc = np.zeros(C)
            for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    inside = 0 <= yy < H and 0 <= xx < W
                    acc += wy * wx * (img[:, yy, xx] if inside else fill)
            out[:, i, j] = acc
    return out


def matrix(name, f, sign, H, W):
    """The source-from-output map of one geometric op (centred coordinates)."""
    M = np.eye(3)
    t = math.radians(30) * f * sign
    if name == "flip":
        M[0, 0] = -1
    elif name == "translate_x":
        M[0, 2] = 0.45 * f * sign * W
    elif name == "translate_y":
        M[1, 2] = 0.45 * f * sign * H
    elif name == "rotate":
        M[:2, :2] = [[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]
    elif name == "shear_x":
        M[0, 1] = 0.3 * f * sign
    elif name == "shear_y":
        M[1, 0] = 0.3 * f * sign
    return M


def equalize_channel(c):
    """One channel (H, W) in [0, 1] on 256 levels: level v -> (cdf(v) - cdf(lowest level)) /
    (pixels - cdf(lowest level)), so the lowest level goes to 0 and the highest to 1; a channel
    of one level is left as it is."""
    q = np.clip(np.floor(c * 255 + 0.5), 0, 255).astype(int)
    cdf = np.cumsum(np.bincount(q.ravel(), minlength=256))
    first, n = cdf[q.min()], q.size
    if n == first:
        return c
    return np.array([[(cdf[v] - first) / (n - first) for v in row] for row in q])


def autocontrast_channel(c):
    """One channel (H, W) stretched linearly to span [0, 1]; a flat channel is left as it is."""
    lo, hi = c.min(), c.max()
    return (c - lo) / (hi - lo) if hi > lo else c


def colour_reference(img, name, f, sign):
    """One colour op on one image (C, H, W) in [0, 1]."""
    factor = 1 + 0.9 * f * sign
    grey = np.tensordot(LUMA, img, axes=1)[None]
    if name in ("brightness", "contrast", "colour", "sharpness"):
        scipy_ndimage = pytest.importorskip("scipy.ndimage")
        kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13
        d = {"brightness": np.zeros_like(img), "contrast": grey.mean() + 0 * img,
             "colour": grey + 0 * img,
             "sharpness": np.stack([scipy_ndimage.convolve(c, kernel, mode="nearest")
                                    for c in img])}[name]
        return np.clip(d + factor * (img - d), 0, 1)
    if name == "solarize":
        return np.where(img >= 1 - f, 1 - img, img) if f > 0 else img   # m = 0: identity
    if name == "posterize":
        step = 2 ** (8 - (8 - round(4 * f)))
        return np.floor(img * 255 / step + 1e-3) * step / 255     # + eps: idempotent
    if name == "equalize":
        return np.stack([equalize_channel(c) for c in img])
    if name == "autocontrast":
        return np.stack([autocontrast_channel(c) for c in img])
    return img


def reference(x, draws, f, ops):
    """Each image alone: its slots' colour ops in order, then its composed geometric map."""
    out = np.empty_like(x)
    for b in range(len(x)):
        img, A = x[b], np.eye(3)
        for idx in draws:
            name, sign = ops[idx[b] // 2], (-1.0, 1.0)[idx[b] % 2]
            img = colour_reference(img, name, f, sign)
            if name in GEOMETRIC:
                A = matrix(name, f, sign, *x.shape[2:]) @ A
        out[b] = bilinear_reference(img, A) if set(ops) & set(GEOMETRIC) else img
    return out


def test_affine_sample_matches_pixel_by_pixel_bilinear():
    rng = np.random.default_rng(1)
    x = rng.random((3, 2, 5, 7))
    A = np.eye(3) + 0.4 * rng.standard_normal((3, 3, 3))
    A[:, 2] = [0, 0, 1]
    A[:, :2, 2] *= 6                                                  # some points fall outside
    expected = np.stack([bilinear_reference(x[b], A[b]) for b in range(3)])
    np.testing.assert_allclose(affine_sample(x, A), expected, atol=1e-12)
    assert np.isclose(affine_sample(x, A), 0.5).any()                 # the fill was reached


@pytest.mark.parametrize("name", OPS)
def test_each_op_alone_matches_its_definition(name):
    x = np.random.default_rng(2).random((8, 3, 9, 11))
    x[0, 1] = 0.25                                                    # a one-level channel
    rng, replay = default_rng(3), default_rng(3)
    out = rand_augment(x, rng, n=1, magnitude=12, ops=(name,))
    draws = [replay.integers(0, 2, size=8)]
    assert set(draws[0]) == {0, 1}                                    # both signs were drawn
    np.testing.assert_allclose(out, reference(x, draws, 12 / 30, (name,)), atol=1e-12)


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_two_slots_of_every_op_match_the_reference(dtype, atol):
    x = np.random.default_rng(4).random((40, 3, 8, 8)).astype(dtype)
    out = rand_augment(x, default_rng(5), n=2, magnitude=9)
    replay = default_rng(5)
    draws = [replay.integers(0, 2 * len(OPS), size=40) for _ in range(2)]
    assert out.dtype == dtype
    expected = reference(x.astype(np.float64), draws, 9 / 30, OPS)
    # float32: equalize's quantisation can move a pixel one level (1/255); elsewhere atol
    close = np.isclose(out, expected, atol=atol)
    assert close.mean() > 0.999 and np.abs(out - expected).max() <= 1 / 255 + atol


def test_colour_only_and_geometric_only_policies():
    x = np.random.default_rng(6).random((6, 3, 8, 8))
    assert np.array_equal(rand_augment(x, default_rng(0), 2, 9, ops=("identity",)), x)
    assert np.array_equal(rand_augment(x, default_rng(0), 0, 9), x)   # no slots: unchanged
    for ops in (COLOUR, GEOMETRIC):
        replay = default_rng(7)
        draws = [replay.integers(0, 2 * len(ops), size=6) for _ in range(2)]
        np.testing.assert_allclose(rand_augment(x, default_rng(7), 2, 9, ops=ops),
                                   reference(x, draws, 9 / 30, ops), atol=1e-12)
