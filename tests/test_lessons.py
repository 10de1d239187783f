"""Every lesson runs to its end and passes its own checks; a failed check exits non-zero."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivit import lesson_utils
from minivit.gradcheck import numerical_gradient
from minivit.layers import linear_backward, linear_forward

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.py"))


def run_script(path, **env_changes):
    """Run a script as a learner would, on this checkout's minivit, with the quick setting.

    One BLAS thread: the lessons' arrays are small, and on a busy 2-core machine OpenBLAS's
    threads only contend (several times slower)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                                    "")]),
           "MINIVIT_LESSON_QUICK": "1", "OPENBLAS_NUM_THREADS": "1", **env_changes}
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300, check=False)


def test_the_ten_lessons_are_there():
    numbers = [p.name[:2] for p in LESSONS]
    assert numbers == [f"{i:02d}" for i in range(1, len(LESSONS) + 1)] and len(LESSONS) >= 10


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_and_passes_its_checks(path):
    r = run_script(path)
    assert r.returncode == 0, f"{path.name} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert "checks passed" in r.stdout and " FAIL" not in r.stdout


def test_lessons_set_a_cupy_environment_aside():
    """A learner with MINIVIT_BACKEND=cupy in the environment (GPU or not) still runs them."""
    r = run_script(ROOT / "lessons" / "03_embeddings.py", MINIVIT_BACKEND="cupy")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "MINIVIT_BACKEND=cupy is set aside" in r.stdout and "checks passed" in r.stdout



@pytest.mark.parametrize("pos_embed, as_folder", [("1d", False), ("rel", True)])
def test_lesson_11_on_a_trained_float32_checkpoint(tmp_path, pos_embed, as_folder):
    """MINIVIT_CHECKPOINT as the README says: a float32 checkpoint (file or run folder, any
    position embedding) passes the lesson's float64 checks."""
    from minivit import ViTConfig, init_params
    from minivit.checkpoint import save_checkpoint
    cfg = ViTConfig.cifar(dim=32, depth=2, heads=2, mlp_dim=64, pos_embed=pos_embed)
    rng = np.random.default_rng(0)
    params = {k: (v + rng.normal(0, 0.05, v.shape)).astype(np.float32)
              for k, v in init_params(cfg, seed=0).items()}
    save_checkpoint(tmp_path / "best.npz", params, {"step": 0},
                    {"arch": "vit", "model": cfg.to_dict(), "epoch": 1})
    where = tmp_path if as_folder else tmp_path / "best.npz"
    r = run_script(ROOT / "lessons" / "11_what_vit_learns.py", MINIVIT_CHECKPOINT=str(where))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "checks passed" in r.stdout

def test_training_lesson_without_data_says_so_and_passes(tmp_path):
    r = run_script(ROOT / "lessons" / "10_training.py", MINIVIT_DATA=str(tmp_path))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "CIFAR-10 is not available, so the real run is skipped" in r.stdout
    assert "one batch memorised" in r.stdout and "checks passed" in r.stdout
    assert not any(tmp_path.iterdir()), "nothing is downloaded or written without the data"


def test_a_failed_check_exits_nonzero(tmp_path):
    script = tmp_path / "broken_lesson.py"
    script.write_text("from minivit.lesson_utils import check, finish\n"
                      "check('right', 1.0, 1.0)\ncheck('wrong', 1.0, 2.0, tol=0.5)\nfinish()\n")
    r = run_script(script)
    assert r.returncode == 1
    assert "1 of 2 checks FAILED: wrong" in r.stdout


def test_check_rows_compare_shapes_and_nan(monkeypatch):
    monkeypatch.setattr(lesson_utils, "_results", [])
    assert lesson_utils.check("ok", np.ones(3), np.ones(3) + 1e-13, 1e-12)
    assert not lesson_utils.check("shape", np.ones(3), np.ones(4), 1.0)
    assert not lesson_utils.check("nan", np.array([np.nan]), np.array([0.0]), 1.0)
    assert [ok for _, ok in lesson_utils._results] == [True, False, False]


def test_gradcheck_helper_catches_a_wrong_backward(monkeypatch):
    monkeypatch.setattr(lesson_utils, "_results", [])
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((3, 4)), "weight": rng.standard_normal((4, 2)),
              "bias": rng.standard_normal(2)}

    def forward(x, weight, bias):
        return linear_forward(x, weight, bias)

    assert lesson_utils.gradcheck(forward, linear_backward, inputs)

    def wrong_backward(dy, cache):                      # forgets the transpose's sum over rows
        dx, grads = linear_backward(dy, cache)
        return dx, {**grads, "bias": dy[0]}
    assert not lesson_utils.gradcheck(forward, wrong_backward, inputs)
    failed = [name for name, ok in lesson_utils._results if not ok]
    assert failed == ["dbias"]


def test_numerical_gradient_refuses_a_non_contiguous_array():
    with pytest.raises(ValueError, match="C-contiguous"):
        numerical_gradient(lambda: 0.0, np.zeros((3, 4)).T)
