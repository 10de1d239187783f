"""Training end to end on tiny synthetic data: the loss falls, resume is bit-exact, NaN stops
the run keeping the last good checkpoint, checkpoints round-trip and refuse other configs."""
import json
import os
import sys

import numpy as np
import pytest
from cifar_fixture import make_batches, write_archive
from conftest import requires_cuda

from minivit import ViTConfig
from minivit.checkpoint import CheckpointMismatch, load_checkpoint, run_backend, save_checkpoint
from minivit.data.loader import train_batch
from minivit.optim import adamw_init
from minivit.recipes import TrainConfig
from minivit.runner import Run, TrainingInterrupted
from minivit.train import NonFiniteLoss, build_model, derived_rng, split_data, train_step

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_cifar  # noqa: E402

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
        with pytest.raises(ValueError, match="not a readable minivit checkpoint"):
            load_checkpoint(path)
    np.savez(path, weights=np.ones(3))                  # an .npz, but not a minivit checkpoint
    with pytest.raises(ValueError, match="an .npz without minivit's meta record"):
        load_checkpoint(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"not a readable minivit checkpoint: not an \.npz "
                                         r"archive \(minivit never loads pickles\)"):
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


def test_cli_smoke_eval_and_refusal(tmp_path, capsys):
    write_archive(tmp_path / "cifar-10-python.tar.gz", make_batches(n=8))
    out = tmp_path / "run"
    flags = ["--data-dir", str(tmp_path), "--patch", "8", "--dim", "16", "--depth", "1",
             "--heads", "2", "--mlp-dim", "32", "--val-split", "8", "--limit-test", "8",
             "--batch-size", "8", "--epochs", "2", "--no-progress"]
    assert train_cifar.main(["--recipe", "smoke", *flags, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recipe: smoke" in text and "best (epoch" in text and "not the official" in text
    for name in ("config.json", "log.jsonl", "last.npz", "best.npz", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_train"] == 32 and 0 <= summary["best_test_acc"] <= 1
    assert train_cifar.main(["--eval-only", str(out / "best.npz"), "--data-dir",
                             str(tmp_path)]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert train_cifar.main(["--resume", str(out), "--dim", "32"]) == 2
    assert "dim: 16 (saved) vs 32 (here)" in capsys.readouterr().err
    before = (out / "last.npz").read_bytes()
    assert train_cifar.main(["--recipe", "smoke", *flags, "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "last.npz").read_bytes() == before                 # nothing overwritten


def test_cli_unavailable_backend_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)          # as if CuPy were not installed
    assert train_cifar.main(["--backend", "cupy", "--recipe", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: backend 'cupy' requested but CuPy is not installed")
    assert "Traceback" not in err


def _set_saved_backend(run_dir, name):
    """Rewrite last.npz's meta as if the run had last been saved on backend `name`."""
    with np.load(run_dir / "last.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "backend": name}))
    np.savez(run_dir / "last.npz", **arrays)


def test_cli_resume_continues_on_the_runs_backend(tmp_path, monkeypatch, capsys):
    """--resume without --backend (or $MINIVIT_BACKEND) takes the backend of the run's last
    save: a GPU run is refused, not silently continued on NumPy, where CuPy cannot run."""
    write_archive(tmp_path / "cifar-10-python.tar.gz", make_batches(n=8))
    out = tmp_path / "run"
    flags = ["--data-dir", str(tmp_path), "--no-progress"]
    assert train_cifar.main(["--recipe", "smoke", "--epochs", "1", "--patch", "8", "--dim",
                             "16", "--depth", "1", "--heads", "2", "--mlp-dim", "32",
                             "--val-split", "8", "--limit-test", "8", "--batch-size", "8",
                             "--out", str(out), *flags]) == 0
    assert run_backend(out) == "numpy"
    _set_saved_backend(out, "cupy")
    assert run_backend(out) == "cupy"
    monkeypatch.setitem(sys.modules, "cupy", None)          # as if CuPy were not installed
    monkeypatch.delenv("MINIVIT_BACKEND", raising=False)
    before = (out / "last.npz").read_bytes()
    capsys.readouterr()
    assert train_cifar.main(["--resume", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: run {out} ran on cupy, which cannot run here")
    assert "add --backend numpy" in err and (out / "last.npz").read_bytes() == before
    assert train_cifar.main(["--resume", str(out), "--backend", "numpy", *flags]) == 0
    assert capsys.readouterr().out.startswith("backend: numpy\nresuming")
    monkeypatch.setenv("MINIVIT_BACKEND", "numpy")            # an explicit choice too
    assert train_cifar.main(["--resume", str(out), *flags]) == 0


def test_cli_unusable_minivit_backend_is_a_one_line_error(monkeypatch, capsys):
    """MINIVIT_BACKEND=cupy without CuPy: one line (no traceback), and --backend overrides."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(train_cifar.backend, "_env_error", None)
    train_cifar.backend.use_env("cupy")
    assert train_cifar.main(["--recipe", "smoke", "--limit-train", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MINIVIT_BACKEND=cupy: backend 'cupy' requested but CuPy is "
                          "not installed") and "Traceback" not in err
    args = train_cifar.parse_args(["--backend", "numpy"])
    assert train_cifar.pick_backend(args) == "" and train_cifar.backend.name() == "numpy"


def test_resume_switches_to_the_runs_backend(tmp_path, monkeypatch):
    """Where the saved backend can run, --resume switches to it and says so."""
    (tmp_path / "config.json").write_text(json.dumps({"backend": "cupy"}))    # no last.npz yet
    used = []
    monkeypatch.setattr(train_cifar.backend, "use", used.append)
    monkeypatch.delenv("MINIVIT_BACKEND", raising=False)
    args = train_cifar.parse_args(["--resume", str(tmp_path)])
    assert train_cifar.pick_backend(args) == " (the run's backend)"
    assert used == ["cupy"]
    (tmp_path / "config.json").write_text("[1, 2]")                           # not a run's
    assert train_cifar.pick_backend(args) == "" and used == ["cupy"]


def test_cli_resume_of_a_non_run_folder_and_zero_limit(tmp_path, capsys):
    assert train_cifar.main(["--resume", str(tmp_path)]) == 2
    assert "is not a run folder (no config.json)" in capsys.readouterr().err
    assert train_cifar.main(["--resume", str(tmp_path / "missing")]) == 2
    assert "missing does not exist; --resume takes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cifar.parse_args(["--limit-train", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_default_recipe_follows_backend(capsys):
    args = train_cifar.parse_args([])
    cfg, tc = train_cifar.build_config(args)
    assert tc.recipe == "cpu-hour" and "the default on numpy" in capsys.readouterr().out
    assert cfg == ViTConfig.cifar()
    args = train_cifar.parse_args(["--recipe", "full", "--batch-size", "256"])
    cfg, tc = train_cifar.build_config(args)
    assert tc.lr == pytest.approx(1e-3) and cfg.drop_path == 0.1 and tc.randaug_n == 2


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


def test_cli_classes_gives_a_k_way_head(tmp_path, capsys):
    write_archive(tmp_path / "cifar-10-python.tar.gz", make_batches(n=20))
    out = tmp_path / "run"
    assert train_cifar.main(["--recipe", "smoke", "--data-dir", str(tmp_path), "--patch", "8",
                             "--dim", "16", "--depth", "1", "--heads", "2", "--mlp-dim", "32",
                             "--classes", "0,1,2", "--val-split", "4", "--batch-size", "4",
                             "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    params, _, meta = load_checkpoint(str(out / "best.npz"))
    assert params["head.weight"].shape == (16, 3) and meta["train"]["classes"] == [0, 1, 2]
    assert train_cifar.main(["--eval-only", str(out / "best.npz"), "--data-dir",
                             str(tmp_path)]) == 0
    assert "accuracy" in capsys.readouterr().out
    # resuming with the same list (a tuple here, a JSON list in the run folder) is accepted
    assert train_cifar.main(["--resume", str(out), "--classes", "0,1,2", "--data-dir",
                             str(tmp_path), "--no-progress"]) == 0
    assert train_cifar.main(["--resume", str(out), "--classes", "0,1", "--data-dir",
                             str(tmp_path), "--no-progress"]) == 2
    with pytest.raises(SystemExit):
        train_cifar.parse_args(["--classes", "a,b"])


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
