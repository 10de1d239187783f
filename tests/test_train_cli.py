"""train_cifar.py from the command line, on a tiny archive in the official layout: the smoke
recipe, --eval-only, --resume on the run's backend, --classes, and the one-line errors."""
import json
import os
import sys

import numpy as np
import pytest
from cifar_fixture import make_batches, write_archive

from minivit import ViTConfig
from minivit.checkpoint import load_checkpoint, run_backend

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_cifar  # noqa: E402

TINY = ["--patch", "8", "--dim", "16", "--depth", "1", "--heads", "2", "--mlp-dim", "32"]


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
    assert train_cifar.main(["--eval-only", str(out), "--data-dir", str(tmp_path)]) == 0
    assert f"{out / 'best.npz'} (epoch" in capsys.readouterr().out       # the folder's best
    assert train_cifar.main(["--resume", str(out), "--dim", "32"]) == 2
    assert "dim: 16 (saved) vs 32 (here)" in capsys.readouterr().err
    assert train_cifar.main(["--resume", str(out / "last.npz")]) == 2
    assert f"is a file; --resume takes the folder a run wrote: --resume {out}" in \
        capsys.readouterr().err
    assert train_cifar.main(["--resume", str(out), "--recipe", "cpu-hour"]) == 2
    assert "trains recipe smoke, not cpu-hour" in capsys.readouterr().err
    assert train_cifar.main(["--resume", str(out), "--out", str(tmp_path / "other")]) == 2
    assert "drop --out" in capsys.readouterr().err
    (tmp_path / "link").symlink_to(out)
    lone = tmp_path / "lone.npz"
    lone.write_bytes((out / "last.npz").read_bytes())
    assert train_cifar.main(["--resume", str(lone)]) == 2
    assert capsys.readouterr().err.rstrip().endswith("--resume takes the folder a run wrote")
    assert train_cifar.main(["--resume", str(tmp_path / "link"), "--out", str(out),
                             "--data-dir", str(tmp_path)]) == 0       # the same folder
    assert "has trained all its 2 epochs: nothing to train" in capsys.readouterr().out
    (out / "best.npz").rename(tmp_path / "best.npz")     # a folder without best.npz: last.npz
    assert train_cifar.main(["--eval-only", str(out), "--data-dir", str(tmp_path)]) == 0
    assert f"{out / 'last.npz'} (epoch" in capsys.readouterr().out
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



def rewrite_npz(path, drop=(), change=None):
    """A copy of a checkpoint's arrays with some dropped or replaced, written back."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in drop}
    np.savez(path, **{**arrays, **(change or {})})


def test_cli_damaged_checkpoints_are_one_line_errors(tmp_path, capsys):
    """A checkpoint that unzips but lacks a parameter or has a wrong shape, a run folder that
    saved nothing: one line each, for --eval-only, --resume and the analysis tools."""
    from minivit.analyze import main as analyze_main
    write_archive(tmp_path / "cifar-10-python.tar.gz", make_batches(n=8))
    out = tmp_path / "run"
    assert train_cifar.main(["--recipe", "smoke", "--data-dir", str(tmp_path), *TINY,
                             "--val-split", "8", "--limit-test", "8", "--batch-size", "8",
                             "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    rewrite_npz(out / "best.npz", drop=["params/head.weight"])
    assert train_cifar.main(["--eval-only", str(out / "best.npz")]) == 2
    assert "parameter head.weight should be (16, 10) for its config, got None" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit, match="parameter head.weight should be"):
        analyze_main([str(out), "--out", str(tmp_path / "figs")])     # the folder: best.npz
    rewrite_npz(out / "last.npz", change={"params/head.bias": np.zeros(3, np.float32)})
    assert train_cifar.main(["--resume", str(out), "--data-dir", str(tmp_path)]) == 2
    assert "parameter head.bias should be (10,) for its config, got (3,)" in \
        capsys.readouterr().err
    (out / "best.npz").unlink()
    (out / "last.npz").unlink()
    assert train_cifar.main(["--resume", str(out)]) == 2
    assert "has no last.npz: the run stopped before its first save" in capsys.readouterr().err
    assert train_cifar.main(["--eval-only", str(out)]) == 2
    assert "neither best.npz nor last.npz" in capsys.readouterr().err


def test_analysis_tools_refuse_other_models_in_a_line(tmp_path):
    from minivit.analyze import main as analyze_main
    from minivit.checkpoint import save_checkpoint
    from minivit.hybrid import HybridConfig, init_hybrid_params
    from minivit.transfer.linear_probe import main as probe_main
    cfg = HybridConfig(image_size=8, stem_channels=(4, 6, 8), stem_strides=(1, 2, 2),
                       num_classes=3, dim=8, depth=1, heads=2, mlp_dim=16)
    path = tmp_path / "hybrid.npz"
    save_checkpoint(path, init_hybrid_params(cfg, seed=0), {"step": 0},
                    {"arch": "hybrid", "model": cfg.to_dict(), "epoch": 1})
    for main in (analyze_main, probe_main):
        args = [str(path), "--out", str(tmp_path / "figs")] if main is analyze_main else \
            [str(path), "--data-dir", str(tmp_path)]
        with pytest.raises(SystemExit, match="holds a hybrid model; this tool reads plain-ViT"):
            main(args)

def test_default_recipe_follows_backend(capsys):
    args = train_cifar.parse_args([])
    cfg, tc = train_cifar.build_config(args)
    assert tc.recipe == "cpu-hour" and "the default on numpy" in capsys.readouterr().out
    assert cfg == ViTConfig.cifar()
    args = train_cifar.parse_args(["--recipe", "full", "--batch-size", "256"])
    cfg, tc = train_cifar.build_config(args)
    assert tc.lr == pytest.approx(1e-3) and cfg.drop_path == 0.1 and tc.randaug_n == 2


def test_cli_classes_gives_a_k_way_head(tmp_path, capsys):
    write_archive(tmp_path / "cifar-10-python.tar.gz", make_batches(n=20))
    out = tmp_path / "run"
    assert train_cifar.main(["--recipe", "smoke", "--data-dir", str(tmp_path), *TINY,
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


def test_cli_time_budget(tmp_path, capsys):
    """--time-budget from the command line: the length is fitted and saved; a warmup shorter
    than the measured epochs is a one-line error."""
    write_archive(tmp_path / "cifar-10-python.tar.gz", make_batches(n=8))
    flags = ["--recipe", "smoke", "--data-dir", str(tmp_path), "--patch", "8", "--dim", "16",
             "--depth", "1", "--heads", "2", "--mlp-dim", "32", "--val-split", "8",
             "--limit-test", "8", "--batch-size", "8", "--epochs", "40", "--no-progress",
             "--time-budget", "1e-6"]
    assert train_cifar.main([*flags, "--out", str(tmp_path / "a")]) == 2
    assert "--warmup 3 or more" in capsys.readouterr().err
    assert train_cifar.main([*flags, "--warmup", "3", "--out", str(tmp_path / "b")]) == 0
    text = capsys.readouterr().out
    assert "up to 40 epochs" in text and "as many as fit in 1e-06 min" in text
    assert "time budget 1e-06 min" in text and "-> 3 epochs" in text
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["epochs"] == summary["time_budget"]["epochs"] == 3
    assert "budget 1e-06 min)" in text


def test_cli_sigterm_saves_like_ctrl_c(tmp_path):
    """kill / timeout / a scheduler send SIGTERM: the run saves where it is and says how to
    resume, as for Ctrl-C (exit 143, the shell's status for SIGTERM)."""
    import signal
    import subprocess
    import time
    write_archive(tmp_path / "cifar-10-python.tar.gz", make_batches(n=8))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(root, "train_cifar.py"), "--recipe", "smoke",
           "--data-dir", str(tmp_path), "--patch", "8", "--dim", "16", "--depth", "1",
           "--heads", "2", "--mlp-dim", "32", "--val-split", "8", "--limit-test", "8",
           "--batch-size", "2", "--epochs", "1000", "--no-progress", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=root, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    for line in proc.stdout:                       # wait for a trained epoch
        if line.startswith("epoch 1/"):
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert f"resume with: python train_cifar.py --resume {out}" in rest
    meta = load_checkpoint(out / "last.npz")[2]
    assert 1 <= meta["epoch"] < 1000
