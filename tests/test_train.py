"""Training end to end on tiny synthetic data: the loss falls, resume is bit-exact, NaN stops
the run keeping the last good checkpoint, checkpoints round-trip and refuse other configs."""
import json

import numpy as np
import pytest
from conftest import requires_cuda

from minivit import ViTConfig
from minivit.checkpoint import CheckpointMismatch, load_checkpoint, load_state, save_checkpoint
from minivit.data.loader import train_batch
from minivit.optim import adamw_init
from minivit.recipes import TrainConfig
from minivit.runner import Run, TrainingInterrupted
from minivit.train import NonFiniteLoss, build_model, derived_rng, split_data, train_step

TINY = ViTConfig(image_size=32, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32)
TC = TrainConfig(epochs=3, batch_size=16, lr=3e-3, warmup_epochs=0.5, val_split=16,
                 eval_batch_size=16)


def synthetic(n_train=96, n_test=16, seed=0):
    """Class k images are noise around a class-specific colour: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 225, (10, 3))

    def make(n):
        y = rng.integers(0, 10, n)
        x = colours[y][:, :, None, None] + rng.normal(0, 20, (n, 3, 32, 32))
        return np.clip(x, 0, 255).astype(np.uint8), y
    return (*make(n_train), *make(n_test))


def test_loss_falls_on_64_images():
    x, y, _, _ = synthetic(64)
    params, tc = build_model(TINY, 0, "float32"), TC.replace(crop=0, flip=False)
    opt = adamw_init(params)
    losses = []
    for step in range(15):
        rng = derived_rng(0, 0, step)
        xb, tb = train_batch(x, y, rng, tc.augment, 10)
        losses.append(train_step(params, opt, xb, tb, TINY, tc, 1e-2, rng)[0])
    assert losses[0] == pytest.approx(np.log(10), rel=1e-4)        # zero head: uniform logits
    assert max(losses[-3:]) < 0.6 * losses[0], losses


@pytest.mark.parametrize("pos_embed", ["1d", "rel", "2d"])
def test_workspace_step_is_bit_identical(pos_embed):
    """Reusing activation buffers (Workspace) changes where results live, not the math."""
    from minivit.workspace import Workspace
    x, y, _, _ = synthetic(32)
    cfg = TINY.replace(dropout=0.1, drop_path=0.1, pos_embed=pos_embed)
    tc = TC.replace(crop=0, flip=False)
    runs = []
    for ws in (None, Workspace()):
        params = build_model(cfg, 0, "float32")
        opt = adamw_init(params)
        for step in range(3):
            rng = derived_rng(0, 0, step)
            xb, tb = train_batch(x, y, rng, tc.augment, 10)
            train_step(params, opt, xb, tb, cfg, tc, 1e-2, rng, workspace=ws)
        runs.append(params)
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k], err_msg=k)


def run_history(run):
    return [(r["train_loss"], r["train_acc"], r["val_loss"], r["val_acc"])
            for r in run.meta["history"]]


@pytest.mark.parametrize("stop_after", [5, 7])          # the end of epoch 1, and mid-epoch 2
def test_resume_is_bit_exact(tmp_path, stop_after):
    data = synthetic()
    tc = TC.replace(mixup=0.2, erase=0.5)                # the randomness of every kind
    whole = Run(TINY, tc, tmp_path / "a", data, bar=False, log=lambda s: None).start()
    whole.train()
    part = Run(TINY, tc, tmp_path / "b", data, bar=False, log=lambda s: None).start()
    with pytest.raises(TrainingInterrupted, match=f"--resume {tmp_path / 'b'}"):
        part.train(stop_after_steps=stop_after)
    resumed = Run(TINY, tc, tmp_path / "b", data, bar=False, log=lambda s: None).resume()
    assert resumed.meta["step"] == stop_after % 5
    resumed.train()
    assert run_history(resumed) == run_history(whole)
    for k, v in whole.params.items():
        np.testing.assert_array_equal(resumed.params[k], v)
    assert len(open(tmp_path / "b" / "log.jsonl").readlines()) == tc.epochs


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = synthetic()
    run = Run(TINY, TC, tmp_path, data, bar=False, log=lambda s: None).start()
    with pytest.raises(TrainingInterrupted):
        run.train(stop_after_steps=5)                    # one good epoch saved
    good = load_checkpoint(tmp_path / "last.npz")[0]
    run = Run(TINY, TC, tmp_path, data, bar=False, log=lambda s: None).resume()
    run.params["patch_embed.weight"][0, 0] = np.nan
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at epoch 2, step 1.*last good"):
        run.train()
    params, _, meta = load_checkpoint(tmp_path / "last.npz")
    assert meta["epoch"] == 1 and all(np.isfinite(v).all() for v in params.values())
    for k, v in good.items():
        np.testing.assert_array_equal(params[k], v)


def test_checkpoint_round_trip_and_config_check(tmp_path):
    params = build_model(TINY, 3, "float32")
    opt = adamw_init(params)
    opt["step"] = 7
    opt["m"]["head.bias"] += 0.25
    path = tmp_path / "c.npz"
    save_checkpoint(path, params, opt, {"model": TINY.to_dict(), "epoch": 2, "note": "x"})
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]        # no temp file left
    p2, o2, meta = load_checkpoint(path, TINY.to_dict())
    assert set(p2) == set(params) and o2["step"] == 7 and meta["epoch"] == 2
    for k in params:
        np.testing.assert_array_equal(p2[k], params[k])
        np.testing.assert_array_equal(o2["m"][k], opt["m"][k])
        np.testing.assert_array_equal(o2["v"][k], opt["v"][k])
    with pytest.raises(CheckpointMismatch, match=r"dim: 16 \(saved\) vs 32 \(here\)"):
        load_checkpoint(path, TINY.replace(dim=32).to_dict())
    whole = path.read_bytes()
    for cut in (len(whole) // 2, len(whole) - 10):      # cut short: a full disk, a lost transfer
        path.write_bytes(whole[:cut])
        for load in (load_checkpoint, load_state):
            with pytest.raises(ValueError, match="not a readable minivit checkpoint"):
                load(path)
    np.savez(path, weights=np.ones(3))                  # an .npz, but not a minivit checkpoint
    with pytest.raises(ValueError, match="an .npz without minivit's meta record"):
        load_checkpoint(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"not a readable minivit checkpoint: not an \.npz "
                                         r"archive \(minivit never loads pickles\)"):
        load_checkpoint(path)
    np.savez(path, meta=np.array([{"code": "runs on load"}], dtype=object))
    with pytest.raises(ValueError, match=r"holds object \(pickled\) arrays, which minivit never"):
        load_checkpoint(path)


def test_checkpoint_from_before_a_new_config_field_loads(tmp_path):
    """A checkpoint written before a config field existed (here pos_embed) is read with the
    field's default, which is what the older code did; a real difference is still refused."""
    params = build_model(TINY, 0, "float32")
    old = {k: v for k, v in TINY.to_dict().items() if k != "pos_embed"}
    path = tmp_path / "old.npz"
    save_checkpoint(path, params, adamw_init(params), {"model": old, "epoch": 1})
    load_checkpoint(path, json.loads(json.dumps(TINY.to_dict())))
    with pytest.raises(CheckpointMismatch, match="pos_embed: '1d' \\(saved\\) vs 'rel'"):
        load_checkpoint(path, TINY.replace(pos_embed="rel").to_dict())


def test_resume_with_another_config_refused(tmp_path):
    data = synthetic()
    Run(TINY, TC, tmp_path, data, bar=False).start()
    with pytest.raises(CheckpointMismatch, match="depth: 1 .* vs 2"):
        Run(TINY.replace(depth=2), TC, tmp_path, data, bar=False).resume()
    with pytest.raises(CheckpointMismatch, match="lr"):
        Run(TINY, TC.replace(lr=1.0), tmp_path, data, bar=False).resume()


@requires_cuda
def test_cupy_run_matches_numpy_shapes_and_resumes(tmp_path):
    from minivit import backend
    backend.use("cupy")
    data = synthetic()
    tc = TC.replace(epochs=1, randaug_n=2, mixup=0.8, cutmix=1.0, erase=0.25)
    run = Run(TINY.replace(drop_path=0.1), tc, tmp_path, data, bar=False).start()
    with pytest.raises(TrainingInterrupted):
        run.train(stop_after_steps=2)
    run = Run(TINY.replace(drop_path=0.1), tc, tmp_path, data, bar=False).resume()
    summary = run.train()
    assert backend.is_cupy_array(run.params["head.weight"])
    assert np.isfinite(run.meta["history"][0]["train_loss"]) and 0 <= summary["final_test_acc"] <= 1


def test_classes_keep_and_relabel_in_the_given_order():
    x = np.arange(12, dtype=np.uint8).reshape(12, 1, 1, 1)
    y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 7, 5], dtype=np.int64)
    tc = TrainConfig(classes=[7, 5], val_split=1)              # a list, as after a JSON load
    assert tc.classes == (7, 5)
    d = split_data((x, y, x, y), tc)
    assert d["test"][1].tolist() == [1, 0, 0, 1]               # 5 -> 1, 7 -> 0
    assert d["test"][0].ravel().tolist() == [5, 7, 10, 11]
    assert d["train"][0].ravel().tolist() == [5, 7, 10] and d["val"][1].tolist() == [1]
    for bad in ([3], [1, 1], [0, 10]):
        with pytest.raises(ValueError, match="classes must be"):
            TrainConfig(classes=bad)


def test_evaluation_through_a_workspace_gives_the_same_numbers():
    """The run evaluates through its training workspace (no fresh buffers per batch)."""
    from minivit.train import evaluate
    from minivit.workspace import Workspace
    _, _, x, y = synthetic(n_test=40)
    params = build_model(TINY.replace(pos_embed="rel"), 0, "float32")
    params["head.weight"][:] = np.random.default_rng(0).standard_normal(
        params["head.weight"].shape)
    cfg, tc, ws = TINY.replace(pos_embed="rel"), TC.replace(eval_batch_size=16), Workspace()
    plain = evaluate(params, cfg, x, y, tc)
    assert evaluate(params, cfg, x, y, tc, workspace=ws) == plain
    assert evaluate(params, cfg, x, y, tc, workspace=ws) == plain       # buffers reused
    assert ws.nbytes() > 0
