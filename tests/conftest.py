import os

import numpy as np
import pytest

from minivit import backend

# Gradient-check thresholds (issue 2): per tensor, norm-relative error and element error.
REL_TOL = 1e-7
ELEM_TOL = 1e-6


_WORST = {}   # test id -> (worst relative error, worst element error, tensors checked)


def assert_gradcheck(report, min_norm=1e-12):
    """Every tensor within tolerance, and no gradient all zero (that would hide a no-op)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    old = _WORST.get(test, (0.0, 0.0, 0))
    _WORST[test] = (max([old[0]] + [r[0] for r in report.values()]),
                    max([old[1]] + [r[1] for r in report.values()]), old[2] + len(report))
    for name, (rel, elem, norm) in report.items():
        assert norm > min_norm, f"{name}: gradient is all zero"
        assert rel <= REL_TOL, f"{name}: relative error {rel:.2e} > {REL_TOL}"
        assert elem <= ELEM_TOL, f"{name}: element error {elem:.2e} > {ELEM_TOL}"


@pytest.fixture
def many_small_chunks(monkeypatch):
    """Row chunks of 256 bytes and two threads (minivit.parallel), so a test of the chunked
    code crosses chunk and thread boundaries (`pytest.mark.usefixtures("many_small_chunks")`)."""
    from minivit import parallel
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 256)
    monkeypatch.setenv("MINIVIT_THREADS", "2")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def cuda_available():
    try:
        import cupy
        return bool(cupy.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


requires_cuda = pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")


def torch_or_skip():
    """Import torch, or skip; with MINIVIT_REQUIRE_TORCH=1 (CI) a missing torch fails."""
    try:
        import torch
    except ImportError:
        if os.environ.get("MINIVIT_REQUIRE_TORCH") == "1":
            pytest.fail("torch is required (MINIVIT_REQUIRE_TORCH=1) but not installed")
        pytest.skip("torch not installed")
    return torch


@pytest.fixture(autouse=True)
def numpy_backend_by_default():
    """Tests run on the backend chosen by MINIVIT_BACKEND (numpy unless set)."""
    yield
    backend.use(os.environ.get("MINIVIT_BACKEND", "numpy"))


def pytest_terminal_summary(terminalreporter):
    """A table of the worst gradient-check errors per test (the figures issue notes quote)."""
    if not _WORST:
        return
    tr = terminalreporter
    tr.write_sep("-", "gradient checks: worst relative / element error per test")
    for test, (rel, elem, n) in sorted(_WORST.items()):
        tr.write_line(f"{rel:9.2e} {elem:9.2e} {n:4d} tensors  {test}")
