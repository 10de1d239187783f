"""Mixed precision (minivit/precision.py): float16 steps against float32 ones, dynamic loss
scaling (skip on overflow, growth), the checks, and a bit-exact resume with the scale."""
import numpy as np
import pytest
from test_train import TC, TINY, run_history, synthetic

from minivit.data.loader import train_batch
from minivit.optim import sgd_init
from minivit.precision import (
    all_finite,
    check_precision,
    half_copy,
    new_loss_scale,
    unscale,
    update_scale,
)
from minivit.runner import Run, TrainingInterrupted
from minivit.train import build_model, derived_rng, train_step


def one_sgd_step(precision, loss_scale=None, seed=0):
    """(params before, params after, opt) of one SGD step (no clip, no decay, no augmentation):
    p_after - p_before = -lr (1 + 0.9) g on the first Nesterov step, so it shows g."""
    x, y, _, _ = synthetic(32, seed=seed)
    tc = TC.replace(crop=0, flip=False, optimizer="sgd", clip_norm=0.0, weight_decay=0.0,
                    label_smoothing=0.0, precision=precision)
    params = build_model(TINY, 0, "float32")
    params["head.weight"][...] = np.random.default_rng(1).normal(0, 0.02,
                                                                 params["head.weight"].shape)
    before = {k: v.copy() for k, v in params.items()}
    opt = sgd_init(params)
    rng = derived_rng(0, 0, 0)
    xb, tb = train_batch(x, y, rng, tc.augment, 10)
    loss, _ = train_step(params, opt, xb, tb, TINY, tc, 1.0, rng, loss_scale=loss_scale)
    return before, params, opt, loss


def test_fp16_gradients_match_fp32():
    b32, a32, _, loss32 = one_sgd_step("fp32")
    ls = new_loss_scale("fp16")
    b16, a16, opt, loss16 = one_sgd_step("fp16", ls)
    assert opt["step"] == 1 and ls["skipped"] == 0 and ls["good_steps"] == 1
    assert loss16 == pytest.approx(loss32, rel=2e-3)
    for k in b32:
        assert a16[k].dtype == np.float32                           # master weights stay fp32
        g32, g16 = b32[k] - a32[k], b16[k] - a16[k]
        scale = np.abs(g32).max()
        assert scale > 0, k
        # float16 carries ~3 decimal digits: a few units of its rounding, relative to the largest
        assert np.abs(g16 - g32).max() <= 2e-2 * scale, k


def test_overflow_skips_the_update_and_halves_the_scale():
    ls = new_loss_scale("fp16", init_scale=2.0 ** 40)             # S * dL overflows float16
    before, after, opt, loss = one_sgd_step("fp16", ls)
    assert np.isfinite(loss)
    assert ls["scale"] == 2.0 ** 39 and ls["skipped"] == 1 and ls["good_steps"] == 0
    assert opt["step"] == 0                                       # the optimizer never ran
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


def test_scale_grows_after_the_interval_and_a_dead_model_stops():
    ls = new_loss_scale("fp16", init_scale=8.0, growth_interval=3)
    for _ in range(2):
        assert update_scale(ls, True)
    assert ls["scale"] == 8.0
    assert update_scale(ls, True) and ls["scale"] == 16.0 and ls["good_steps"] == 0
    assert not update_scale(ls, False) and ls["scale"] == 8.0
    ls["scale"] = 2.0 ** -24
    with pytest.raises(FloatingPointError, match="not finite even at loss scale"):
        update_scale(ls, False)
    assert new_loss_scale("fp32") is None and new_loss_scale("tf32") is None


def test_precision_checks():
    with pytest.raises(ValueError, match="must be one of"):
        check_precision("bf16", "float32")
    with pytest.raises(ValueError, match="needs --dtype float32"):
        TC.replace(precision="fp16", dtype="float64")
    with pytest.raises(ValueError, match="needs --backend cupy"):
        check_precision("tf32", "float32", "numpy")
    with pytest.raises(ValueError, match="go together"):
        one_sgd_step("fp16", loss_scale=None)                   # would silently run float32
    with pytest.raises(ValueError, match="supports the plain ViT"):
        from minivit.cmt import cmt_cifar
        Run(cmt_cifar(), TC.replace(precision="fp16"), "unused", synthetic(),
            bar=False, log=lambda s: None)


def test_fp16_run_learns_like_fp32_and_resumes_bit_exactly(tmp_path):
    data = synthetic()
    quiet = dict(bar=False, log=lambda s: None)
    tc = TC.replace(precision="fp16", epochs=2)
    ref = Run(TINY, tc.replace(precision="fp32"), tmp_path / "fp32", data, **quiet).start()
    ref.train()
    whole = Run(TINY, tc, tmp_path / "a", data, **quiet).start()
    whole.train()
    losses = [r["train_loss"] for r in whole.meta["history"]]
    ref_losses = [r["train_loss"] for r in ref.meta["history"]]
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-2)
    assert losses[-1] < losses[0]
    assert whole.meta["history"][-1]["loss_scale"] == 2.0 ** 16
    assert whole.meta["loss_scale"]["skipped"] == 0


def test_fp16_resume_is_bit_exact_with_a_moving_scale(tmp_path):
    """The scale grows (interval 3) and overflows (at 2^18 here) during the run: a resume
    mid-epoch must restore it, or the history differs."""
    data, quiet = synthetic(), dict(bar=False, log=lambda s: None)
    tc = TC.replace(precision="fp16", epochs=2)

    def start(name):
        run = Run(TINY, tc, tmp_path / name, data, **quiet).start()
        run.meta["loss_scale"].update(scale=2.0 ** 15, growth_interval=3)
        return run
    whole = start("a")
    whole.train()
    ls = whole.meta["loss_scale"]
    assert ls["scale"] > 2.0 ** 15 and ls["skipped"] >= 1                 # grew, then overflowed
    part = start("b")
    with pytest.raises(TrainingInterrupted):
        part.train(stop_after_steps=7)                               # mid-epoch 2
    resumed = Run(TINY, tc, tmp_path / "b", data, **quiet).resume()
    assert resumed.meta["loss_scale"] == part.meta["loss_scale"]
    resumed.train()
    assert run_history(resumed) == run_history(whole)
    for k, v in whole.params.items():
        np.testing.assert_array_equal(resumed.params[k], v)


def test_half_copy_and_unscale_are_views_of_one_flat_array():
    rng = np.random.default_rng(0)
    params = {"a.weight": rng.standard_normal((3, 4)).astype(np.float32),
              "a.bias": rng.standard_normal(4).astype(np.float32)}
    p16 = half_copy(params)
    assert p16.flat.dtype == np.float16 and p16.flat.size == 16
    for k, v in params.items():
        assert p16[k].base is p16.flat and p16[k].shape == v.shape
        np.testing.assert_array_equal(p16[k], v.astype(np.float16))
    g16 = {k: (v * 100).astype(np.float16) for k, v in params.items()}
    g = unscale(g16, 64.0)
    for k in params:
        np.testing.assert_array_equal(g[k], g16[k].astype(np.float32) / 64.0)
        assert g[k].dtype == np.float32 and g[k].base is g.flat
    assert bool(all_finite(g)) and bool(all_finite(dict(g)))
    g["a.bias"][2] = np.inf                                           # seen through the view
    assert not bool(all_finite(g)) and not bool(all_finite(dict(g)))
    assert bool(all_finite(unscale(half_copy(g16), 2.0)))             # a FlatDict in, too
