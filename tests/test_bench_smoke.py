"""The benchmark's smoke run (tiny model, one short round): it runs and prints its tables.
No timing is asserted; speed is measured by benchmarks/, not by tests."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_bench_step_smoke(precision):
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_step.py"),
                        "--smoke", "--precision", precision], capture_output=True, text=True,
                       env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "| minivit |" in r.stdout and "GEMM-only limit" in r.stdout
    assert f"float32 ({precision})" in r.stdout
    assert "| minivit | nan" not in r.stdout                         # the worker did not fail
    assert "### Scaling" in r.stdout
    assert "failed" not in r.stderr, r.stderr


def test_bench_train_sizes_smoke():
    """The per-size step timing runs at two sizes, one of them below full size (the shrink path),
    and --profile prints each cell's ops."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_train_sizes.py"),
                        "--batches", "4", "--sizes", "16,32", "--steps", "1", "--warmup", "0",
                        "--profile"],
                       capture_output=True, text=True, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "| batch | 16 px | 32 px |" in r.stdout
    row = [line for line in r.stdout.splitlines() if line.startswith("| 4 |")]
    assert len(row) == 1 and row[0].count("img/s") == 2, r.stdout
    assert "### batch 4, 16 px" in r.stdout and "| adamw_step | 1 |" in r.stdout, r.stdout


def test_bench_block_smoke():
    """One block timed whole (eval forward; train forward + backward) and piece by piece."""
    env = dict(os.environ, PYTHONPATH=ROOT, MINIVIT_THREADS="1")
    script = os.path.join(ROOT, "benchmarks", "bench_block.py")
    for flags, want in (([], "train forward+backward best"), (["--breakdown"], "GELU(h + b_1)")):
        r = subprocess.run([sys.executable, script, "--batch", "2", "--reps", "2", *flags],
                           capture_output=True, text=True, env=env, timeout=300, check=False)
        assert r.returncode == 0 and want in r.stdout, r.stdout + r.stderr
    assert r.stdout.count("GFLOP/s") == 6, r.stdout                # the six matmuls


def test_eval_flip_accuracies():
    """benchmarks/eval_flip.py: on mirror-symmetric images the plain, mirrored and averaged
    predictions agree; labelled with the model's own plain predictions, plain accuracy is 1 and
    the mirrored one is not (asymmetric images, large random weights)."""
    import importlib.util

    import numpy as np

    from minivit import ViTConfig, init_params
    from minivit.data.loader import eval_batch
    from minivit.models import predict_probs
    spec = importlib.util.spec_from_file_location(
        "eval_flip", os.path.join(ROOT, "benchmarks", "eval_flip.py"))
    eval_flip = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_flip)
    cfg = ViTConfig.cifar(image_size=8, patch_size=4, dim=16, depth=1, heads=2, mlp_dim=32)
    rng = np.random.default_rng(0)                 # large random weights: varied predictions
    params = {k: (v + rng.normal(0, 0.5, v.shape)).astype("float32")
              for k, v in init_params(cfg, 0, "float32").items()}
    x = rng.integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
    own = predict_probs(params, eval_batch(x), cfg).argmax(1)
    plain, mirrored, _ = eval_flip.accuracies(params, cfg, x, own, batch=16)
    assert plain == 1.0 and mirrored < 1.0
    sym = np.concatenate([x[..., :4], x[..., :4][..., ::-1]], axis=-1)
    own = predict_probs(params, eval_batch(sym), cfg).argmax(1)
    assert eval_flip.accuracies(params, cfg, sym, own, batch=16) == (1.0, 1.0, 1.0)
