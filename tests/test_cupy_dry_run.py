"""A whole training run on minivit's CuPy code path, on the CPU: benchmarks/op_counter.py's
fake_cupy() sets minivit.backend to a NumPy stand-in named "cupy" (the fused kernels stood in
for by NumPy), so the code only a GPU runs otherwise — the packed AdamW, the fused kernels' call
sites, attention's contiguous heads, device-array checkpoints, resume, evaluation — runs in CI.
What it cannot check (CuPy itself, the kernels' CUDA text) is tests/test_kernels_cpu.py's,
tests/test_kernels_nvrtc.py's and, on a GPU, tests/test_cupy_paths.py's."""
import json
import os
import sys

import numpy as np
import pytest
from cifar_fixture import make_batches, write_archive
from test_train import TC, TINY, run_history, synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "benchmarks"), ROOT]
import op_counter as co  # noqa: E402

import train_cifar  # noqa: E402
from minivit import optim, parallel  # noqa: E402
from minivit.runner import Run, TrainingInterrupted  # noqa: E402

CFG = TINY.replace(depth=2, drop_path=0.1)          # block 2 drops paths (rates 0, 0.1)
TC2 = TC.replace(epochs=2, randaug_n=2, mixup=0.8, cutmix=1.0, erase=0.25, dtype="float64")


def run(path, data, stop_after=None, resume=False):
    r = Run(CFG, TC2, path, data, bar=False, log=lambda s: None)
    r = r.resume() if resume else r.start()
    if stop_after is None:
        return r, r.train()
    with pytest.raises(TrainingInterrupted):
        r.train(stop_after_steps=stop_after)
    return r, None


def test_a_run_on_the_cupy_path_matches_numpy_and_resumes(tmp_path):
    data = synthetic()
    co.counts.clear()
    with co.fake_cupy():
        whole, summary = run(tmp_path / "a", data)
        assert isinstance(whole.params["head.weight"], co.Counted)
        assert optim._packed(whole.params, whole.opt, whole.params) is not None  # packed AdamW
        run(tmp_path / "b", data, stop_after=7)                       # mid-epoch 2
        resumed, _ = run(tmp_path / "b", data, resume=True)
    fused = {name for key in co.counts if isinstance(key, tuple)
             for name in key[1:] if str(name).startswith("fused.")}
    assert {"fused.adamw_update", "fused.layernorm_backward_dx", "fused.softmax_forward",
            "fused.gelu_forward", "fused.masked_bias_residual", "fused.bias_residual",
            "fused.cross_entropy_rows", "fused.randaug_crop_flip",
            "fused.mix_normalize_erase"} <= fused
    assert run_history(resumed) == run_history(whole)                 # bit-exact resume
    # inline: NumPy would split the batch over the cores, each share drawing its own masks
    numpy_run, numpy_summary = parallel._run_inline(lambda: run(tmp_path / "c", data))
    np.testing.assert_allclose(run_history(whole), run_history(numpy_run), rtol=1e-9)
    assert summary["final_test_acc"] == numpy_summary["final_test_acc"]
    for k, v in numpy_run.params.items():
        np.testing.assert_allclose(whole.params[k].get(), v, rtol=1e-8, atol=1e-10)


def test_the_cli_on_cupy_runs_the_full_recipe_evaluates_and_resumes(tmp_path, capsys):
    """train_cifar.py --backend cupy with no recipe: the `full` recipe (RandAugment, mixing,
    erasing, drop-path, label smoothing, evaluation in large batches), its checkpoint, then
    --eval-only and --resume on the run's backend."""
    write_archive(tmp_path / "cifar-10-python.tar.gz", make_batches(n=8))
    out = tmp_path / "run"
    flags = ["--data-dir", str(tmp_path), "--patch", "8", "--dim", "16", "--depth", "2",
             "--heads", "2", "--mlp-dim", "32", "--val-split", "8", "--limit-test", "8",
             "--batch-size", "8", "--no-progress"]
    with co.fake_cupy():
        assert train_cifar.main(["--backend", "cupy", *flags, "--epochs", "2",
                                 "--out", str(out)]) == 0
        assert "recipe: full" in capsys.readouterr().out
        assert train_cifar.main(["--eval-only", str(out / "best.npz"), "--data-dir",
                                 str(tmp_path), "--backend", "cupy"]) == 0
        assert "accuracy" in capsys.readouterr().out
        assert train_cifar.main(["--resume", str(out), "--no-progress"]) == 0   # finished
    assert len((out / "log.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "config.json").read_text())["train"]["recipe"] == "full"


def test_mixed_precision_on_the_cupy_path_follows_numpy(tmp_path):
    """--precision fp16 on the CuPy path: the float16 step on the fused kernels (their
    stand-ins) against NumPy's plain float16 step, the same run: both compute in float16, in
    different orders, so the epochs' losses agree to float16's precision, not bit for bit."""
    data = synthetic()
    tc = TC.replace(epochs=2, precision="fp16", dtype="float32")
    co.counts.clear()
    with co.fake_cupy():
        r = Run(TINY, tc, tmp_path / "a", data, bar=False, log=lambda s: None).start()
        r.train()
    fused = {name for key in co.counts if isinstance(key, tuple)
             for name in key[1:] if str(name).startswith("fused.")}
    assert {"fused.layernorm_forward", "fused.layernorm_backward_dx", "fused.softmax_forward",
            "fused.gelu_forward"} <= fused                             # half on the kernels

    def numpy_run():
        n = Run(TINY, tc, tmp_path / "b", data, bar=False, log=lambda s: None).start()
        n.train()
        return n
    np.testing.assert_allclose(run_history(r), run_history(parallel._run_inline(numpy_run)),
                               rtol=2e-2, atol=2e-2)
