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
