"""The benchmark's smoke run (tiny model, one short round): it runs and prints its tables.
No timing is asserted; speed is measured by benchmarks/, not by tests."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_step_smoke():
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_step.py"),
                        "--smoke"], capture_output=True, text=True, env=env, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "| minivit |" in r.stdout and "GEMM-only limit" in r.stdout
    assert "### Scaling" in r.stdout
    assert "failed" not in r.stderr, r.stderr
