"""Every fused CuPy kernel against the plain xp version of the same layer (MINIVIT_FUSED=0),
in float32 and float64. Skipped unless CuPy and a CUDA device are available."""
import numpy as np
import pytest
from conftest import requires_cuda

from minivit import kernels_cupy, layers, parallel

pytestmark = requires_cuda
TOL = {"float32": 2e-6, "float64": 1e-13}


def both(monkeypatch, fn):
    """fn() with the fused kernels, then with the plain xp code; results as host arrays."""
    import cupy
    monkeypatch.delenv("MINIVIT_FUSED", raising=False)
    fused = fn()
    monkeypatch.setenv("MINIVIT_FUSED", "0")
    plain = fn()
    monkeypatch.delenv("MINIVIT_FUSED")
    return [cupy.asnumpy(a) for a in fused], [cupy.asnumpy(a) for a in plain]


def data(dtype, *shape, seed=0):
    import cupy
    return cupy.asarray(np.random.default_rng(seed).standard_normal(shape) * 2, dtype=dtype)


def assert_close(fused, plain, dtype):
    """Element-wise closeness of two lists of arrays (host or device)."""
    import cupy
    for f, p in zip(fused, plain, strict=True):
        np.testing.assert_allclose(cupy.asnumpy(f), cupy.asnumpy(p), rtol=TOL[dtype],
                                   atol=TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gelu_kernel(monkeypatch, dtype):
    x, dy = data(dtype, 4, 9, 40), data(dtype, 4, 9, 40, seed=1)

    def run():
        y, cache = layers.gelu_forward(x)
        return y, cache[1], layers.gelu_backward(dy, cache)[0]
    assert_close(*both(monkeypatch, run), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [5, 65, 257])                   # < 32, odd, > 8 warps' worth
def test_softmax_kernels(monkeypatch, dtype, n):
    s, dA = data(dtype, 3, 2, 7, n), data(dtype, 3, 2, 7, n, seed=1)

    def run():
        A = layers.softmax_forward(s, scale=0.3)
        return A, layers.softmax_backward(dA, A, scale=0.3)
    assert_close(*both(monkeypatch, run), dtype)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layernorm_kernels(monkeypatch, dtype, affine):
    """With gamma = beta = None (the block's folded LN) the kernels run with a unit gamma."""
    x, dy = data(dtype, 6, 5, 128) + 1, data(dtype, 6, 5, 128, seed=1)
    g, b = (data(dtype, 128, seed=2), data(dtype, 128, seed=3)) if affine else (None, None)

    def run():
        y, cache = layers.layernorm_forward(x, g, b)
        dx, grads = layers.layernorm_backward(dy, cache)
        assert (y is cache[0]) is (not affine) and (grads == {}) is (not affine)
        return (y, cache[0], cache[2], dx) + ((grads["weight"], grads["bias"]) if affine else ())
    assert_close(*both(monkeypatch, run), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bias_residual_and_adamw_kernels(dtype):
    import cupy
    y, r, b = data(dtype, 4, 6, 16), data(dtype, 4, 6, 16, seed=1), data(dtype, 16, seed=2)
    out = cupy.empty_like(y)
    assert_close([kernels_cupy.bias_residual(y, b, r, out)], [y + b + r], dtype)
    p, g = data(dtype, 33, seed=3), data(dtype, 33, seed=4)
    m, v = data(dtype, 33, seed=5) * 0.1, data(dtype, 33, seed=6) ** 2
    lr, b1, b2, eps, wd, t = 1e-3, 0.9, 0.999, 1e-8, 0.05, 3
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    gs = cupy.asarray(0.7, dtype)                                  # a clipping scale
    gc = g * gs
    m_ref, v_ref = b1 * m + (1 - b1) * gc, b2 * v + (1 - b2) * gc * gc
    p_ref = p - lr * wd * p - lr * (m_ref / c1) / (cupy.sqrt(v_ref / c2) + eps)
    kernels_cupy.adamw_update(p, g, m, v, lr, b1, b2, eps, lr * wd, c1, c2, gs)
    assert_close([p, m, v], [p_ref, m_ref, v_ref], dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_col_sums(dtype):
    """The GEMV column sums against a float64 sum. Summation order differs, so float32 results
    differ by rounding, which grows like sqrt(rows) eps sum|a| (the first run on an H100 saw
    1.1e-5 between the GEMV and CuPy's sum of 1000 rows; the bound here is ~6e-3, while one
    row too many or too few moves a sum by ~1.6 on average)."""
    import cupy
    a = data(dtype, 1000, 48)
    ref = cupy.asnumpy(a.astype("float64").sum(axis=0))
    bound = 1000 ** 0.5 * np.finfo(dtype).eps * float(abs(a).astype("float64").sum(axis=0).max())
    np.testing.assert_allclose(cupy.asnumpy(parallel.col_sums(a)), ref, rtol=0, atol=bound)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sum_of_squares(dtype):
    """One float64 reduction over several arrays equals the float64 sum of their squares."""
    import cupy
    a, b = data(dtype, 1000, 48), data(dtype, 7, seed=1)
    ref = (a.astype("float64") ** 2).sum() + (b.astype("float64") ** 2).sum()
    got = kernels_cupy.sum_of_squares([a, b])
    assert got.dtype == cupy.float64                               # accumulated in float64
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("clip", [False, True])
def test_adamw_step_fused_matches_plain(monkeypatch, dtype, clip):
    """minivit.optim.adamw_step calls the kernel for CuPy arrays: same update as the xp code,
    also with the clipping scale folded in as train_step passes it (a float64 0-d array)."""
    from minivit.optim import adamw_init, adamw_step, clip_scale

    def run():
        params = {"blocks.0.mlp.fc1.weight": data(dtype, 8, 16), "blocks.0.mlp.fc1.bias":
                  data(dtype, 16, seed=1)}                            # decayed and not decayed
        opt = adamw_init(params)
        for s in range(3):
            grads = {k: data(dtype, *v.shape, seed=10 + s) for k, v in params.items()}
            scale = clip_scale(grads, 1.0)[0] if clip else None     # the norm is ~20: clipped
            adamw_step(params, grads, opt, 1e-2, weight_decay=0.05, grad_scale=scale)
        return list(params.values()) + list(opt["m"].values()) + list(opt["v"].values())
    assert_close(*both(monkeypatch, run), dtype)
