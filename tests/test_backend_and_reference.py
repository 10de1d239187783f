"""The backend switch, erf, and the vectorised layers against the naive loop references."""
import math
import sys

import numpy as np
import pytest
from conftest import requires_cuda

from minivit import ViTConfig, backend, init_params, vit_backward, vit_forward
from minivit.erf import erf_numpy
from minivit.layers import attention_forward, layernorm_forward, patchify
from minivit.reference import attention_loops, layernorm_loops, patchify_loops


def test_erf_matches_math_erf_to_1e15():
    x = np.concatenate([np.linspace(-8, 8, 100_001), [0.0, -0.0, 0.5, -0.5, 4.0, 30.0, -np.inf]])
    ref = np.array([math.erf(v) for v in x])
    assert np.abs(erf_numpy(x) - ref).max() <= 1e-15
    assert np.isnan(erf_numpy(np.array([np.nan]))).all()
    x32 = x.astype(np.float32)
    assert erf_numpy(x32).dtype == np.float32
    assert np.abs(erf_numpy(x32) - np.array([math.erf(v) for v in x32])).max() < 3e-7


def test_erf_in_float16_has_no_overflow():
    """float16 (fp16 training on NumPy): within float16 rounding everywhere, never NaN."""
    x = np.linspace(-8, 8, 4001).astype(np.float16)
    ref = np.array([math.erf(v) for v in x.astype(np.float64)])
    with np.errstate(all="raise"):
        for got in (erf_numpy(x), backend.erf(x)):
            assert got.dtype == np.float16
            assert np.abs(got.astype(np.float64) - ref).max() <= 1e-3


def test_patchify_matches_loops_and_conv_weight_order():
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 12))
    np.testing.assert_array_equal(patchify(x, 4), patchify_loops(x, 4))
    # flattened (c, i, j): element (c=1, i=2, j=3) of patch 0 sits at (1*4 + 2)*4 + 3
    assert patchify(x, 4)[0, 0, (1 * 4 + 2) * 4 + 3] == x[0, 1, 2, 3]


def test_attention_matches_per_head_loops():
    rng = np.random.default_rng(0)
    B, T, D, H = 3, 6, 12, 3
    p = {"qkv.weight": rng.standard_normal((D, 3 * D)), "qkv.bias": rng.standard_normal(3 * D),
         "proj.weight": rng.standard_normal((D, D)), "proj.bias": rng.standard_normal(D)}
    x = rng.standard_normal((B, T, D))
    bias = rng.standard_normal((1, H, T, T))
    out, cache = attention_forward(x, p, H, bias=bias)
    ref_out, ref_attn = attention_loops(x, p, H, bias=bias)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cache["attn"], ref_attn, rtol=1e-12, atol=1e-14)


def test_layernorm_matches_loops():
    rng = np.random.default_rng(0)
    x, g, b = rng.standard_normal((4, 5, 7)) * 3 + 2, rng.standard_normal(7), rng.standard_normal(7)
    np.testing.assert_allclose(layernorm_forward(x, g, b)[0], layernorm_loops(x, g, b),
                               rtol=1e-12, atol=1e-12)


def test_unknown_backend_and_numpy_default():
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        backend.use("tensorflow")
    assert backend.use("numpy") is np and backend.name() == "numpy"
    assert backend.get_array_module(np.zeros(2)) is np


def test_cupy_missing_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)        # import cupy -> ImportError
    with pytest.raises(backend.BackendUnavailable, match="CuPy is not installed"):
        backend.use("cupy")
    assert backend.name() == "numpy"


def test_cupy_without_gpu_is_explained(monkeypatch):
    class FakeCupy:
        class cuda:
            @staticmethod
            def is_available():
                return False
    monkeypatch.setitem(sys.modules, "cupy", FakeCupy)
    with pytest.raises(backend.BackendUnavailable, match="no CUDA device"):
        backend.use("cupy")


def test_unusable_minivit_backend_env_waits_for_first_use(monkeypatch):
    """MINIVIT_BACKEND=cupy without CuPy does not break the import: the error comes at the
    first use, names the variable, and use("numpy") (e.g. --backend numpy) clears it."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(backend, "_env_error", None)
    backend.use_env("cupy")                                           # at import: no raise
    for first_use in (backend.name, backend.xp, lambda: backend.to_device([1.0])):
        with pytest.raises(backend.BackendUnavailable, match="MINIVIT_BACKEND=cupy: .*not "
                                                             "installed"):
            first_use()
    backend.use("numpy")
    assert backend.name() == "numpy"
    backend.use_env("cuda")
    with pytest.raises(ValueError, match="MINIVIT_BACKEND=cuda: unknown backend 'cuda'"):
        backend.default_rng(0)
    backend.use("numpy")


@requires_cuda
def test_numpy_and_cupy_agree():
    cfg = ViTConfig(image_size=16, patch_size=4, num_classes=5, dim=16, depth=2, heads=2,
                    mlp_dim=32)
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16))
    results = []
    for name in ("numpy", "cupy"):
        backend.use(name)
        params = init_params(cfg, seed=1, dtype="float64", zero_head=False)
        logits, cache = vit_forward(params, backend.to_device(x), cfg)
        dx, grads = vit_backward(logits * 0 + 1e-2 * backend.to_device(np.arange(5.0)), cache)
        results.append((backend.to_numpy(logits), backend.to_numpy(dx),
                        {k: backend.to_numpy(v) for k, v in grads.items()}))
    (l0, d0, g0), (l1, d1, g1) = results
    np.testing.assert_allclose(l1, l0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d1, d0, rtol=1e-9, atol=1e-12)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-9, atol=1e-12, err_msg=k)
