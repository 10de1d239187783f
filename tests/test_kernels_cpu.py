"""The CuPy kernels compiled for the CPU (tests/cpu_kernels.py), against the plain NumPy code
they replace on a GPU: the element bodies (minivit.kernels_cupy.ELEMENTWISE, SUMSQ) and the
warp-per-row softmax and LayerNorm kernels (ROWS_SRC, run with an emulated warp). Skipped
without g++."""
import numpy as np
import pytest
from cpu_kernels import CXX, ROW_SIGNATURES, elementwise, reduction, row_kernel

from minivit import kernels_cupy
from minivit.layers.attention import softmax_backward, softmax_forward
from minivit.layers.dropout import residual_drop_path
from minivit.layers.gelu import gelu_backward, gelu_forward
from minivit.layers.layernorm import layernorm_backward, layernorm_forward
from minivit.layers.loss import cross_entropy
from minivit.optim import adamw_init, adamw_step

pytestmark = pytest.mark.skipif(CXX is None, reason="needs g++")
TOL = {"float32": 2e-6, "float64": 1e-13}
DTYPES = ["float32", "float64"]


def data(dtype, *shape, seed=0, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_kernels(dtype):
    x, dy = data(dtype, 7, 33), data(dtype, 7, 33, seed=1)
    y, cdf = np.empty_like(x), np.empty_like(x)
    elementwise(kernels_cupy.ELEMENTWISE["gelu_fwd"], dtype)(x, y, cdf)
    ref, cache = gelu_forward(x.copy(), "none")
    np.testing.assert_allclose(y, ref, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(cdf, cache[1], rtol=TOL[dtype], atol=TOL[dtype])
    dx = np.empty_like(x)
    elementwise(kernels_cupy.ELEMENTWISE["gelu_bwd"], dtype)(dy, x, cdf, dx)
    np.testing.assert_allclose(dx, gelu_backward(dy, cache)[0], rtol=TOL[dtype],
                               atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_with_bias_kernel(dtype):
    """fc1's bias added in GELU's pass: x <- x + b (kept for backward), y = GELU(x + b)."""
    x, b = data(dtype, 7, 33), data(dtype, 33, seed=1)
    y, cdf, xb = np.empty_like(x), np.empty_like(x), x.copy()
    elementwise(kernels_cupy.ELEMENTWISE["gelu_bias_fwd"], dtype)(b, xb, y, cdf)
    np.testing.assert_array_equal(xb, x + b)
    ref, cache = gelu_forward(x + b, "none")
    np.testing.assert_allclose(y, ref, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(cdf, cache[1], rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_residual_kernel(dtype):
    y, b, r = data(dtype, 5, 9), data(dtype, 9, seed=1), data(dtype, 5, 9, seed=2)
    out = np.empty_like(y)
    elementwise(kernels_cupy.ELEMENTWISE["bias_res"], dtype)(y, b, r, out)
    np.testing.assert_allclose(out, y + b + r, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gs", [1.0, 0.25])
def test_adamw_kernel_matches_the_update(dtype, gs):
    lr, wd, b1, b2, eps = 1e-2, 0.05, 0.9, 0.999, 1e-8
    params = {"fc.weight": data(dtype, 4, 6)}
    state = adamw_init(params)
    p, m, v = (a.copy() for a in (params["fc.weight"], state["m"]["fc.weight"],
                                  state["v"]["fc.weight"]))
    kernel = elementwise(kernels_cupy.ELEMENTWISE["adamw"], dtype)
    for t in (1, 2, 3):
        g = data(dtype, 4, 6, seed=10 + t)
        adamw_step(params, {"fc.weight": g}, state, lr, (b1, b2), eps, wd,
                   grad_scale=np.asarray(gs))
        kernel(g, gs, lr, b1, b2, eps, lr * wd, 1 - b1 ** t, 1 - b2 ** t, p, m, v)
    tol = 20 * TOL[dtype]                        # three steps of rounding, in either order
    np.testing.assert_allclose(p, params["fc.weight"], rtol=tol, atol=tol)
    np.testing.assert_allclose(m, state["m"]["fc.weight"], rtol=tol, atol=tol)
    np.testing.assert_allclose(v, state["v"]["fc.weight"], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_residual_kernel(dtype):
    """A residual add of a drop-path branch: r + x m, m a (B, 1, 1) scaled keep mask."""
    x, r = data(dtype, 4, 5, 6), data(dtype, 4, 5, 6, seed=1)
    m = np.array([0.0, 1.25, 1.25, 0.0], dtype)[:, None, None]
    out = np.empty_like(x)
    elementwise(kernels_cupy.ELEMENTWISE["masked_res"], dtype)(x, m, r, out)
    np.testing.assert_allclose(out, r + x * m, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_bias_residual_kernel(dtype):
    """The residual add of a branch whose last bias was deferred (CuPy's block): r + (x + b) m,
    against residual_drop_path's NumPy path with that bias."""
    x, r, b = data(dtype, 4, 5, 6), data(dtype, 4, 5, 6, seed=1), data(dtype, 6, seed=2)
    m = np.array([0.0, 1.25, 1.25, 0.0], dtype)[:, None, None]
    out = np.empty_like(x)
    elementwise(kernels_cupy.ELEMENTWISE["masked_bias_res"], dtype)(x, b, m, r, out)
    ref, mask = residual_drop_path(r, x, 0.2, None, True, mask=m, bias=b)
    assert mask is m
    np.testing.assert_allclose(out, ref, rtol=TOL[dtype], atol=TOL[dtype])
    elementwise(kernels_cupy.ELEMENTWISE["bias_res"], dtype)(x, b, r, out)          # no mask
    np.testing.assert_allclose(out, residual_drop_path(r, x, 0.2, None, False, bias=b)[0],
                               rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_of_squares_kernel(dtype):
    x = data(dtype, 1000, seed=3)
    got = reduction(kernels_cupy.SUMSQ, dtype)(x)
    assert got == pytest.approx(float((x.astype(np.float64) ** 2).sum()), rel=1e-12)


def test_a_wrong_body_is_caught():
    """The harness runs the body it is given: a constant off by one digit fails the check."""
    ins, outs, body = kernels_cupy.ELEMENTWISE["gelu_fwd"]
    x = data("float64", 50)
    y, cdf = np.empty_like(x), np.empty_like(x)
    elementwise((ins, outs, body.replace("0.7071067811", "0.7071167811")), "float64")(x, y, cdf)
    assert not np.allclose(y, gelu_forward(x.copy(), "none")[0], rtol=1e-9, atol=1e-9)


ROWS = 13                               # not a multiple of the 8 rows a block: a partial block


def rows_run(name, dtype, *args, source=kernels_cupy.ROWS_SRC):
    """Run a row kernel over ROWS rows as minivit.kernels_cupy launches it."""
    kernel = row_kernel(source, name, ROW_SIGNATURES[name], dtype)
    kernel(kernels_cupy.row_grid(ROWS), *args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [5, 33, 65, 128])    # fewer than a warp's lanes, T and D tokens
def test_softmax_row_kernels(dtype, n):
    s, dA = data(dtype, ROWS, n), data(dtype, ROWS, n, seed=1)
    A = np.empty_like(s)
    rows_run("softmax_fwd", dtype, s, A, ROWS, n, 0.25)
    np.testing.assert_allclose(A, softmax_forward(s, 0.25), rtol=TOL[dtype], atol=TOL[dtype])
    dS = np.empty_like(s)
    rows_run("softmax_bwd", dtype, dA, A, dS, ROWS, n, 0.25)
    np.testing.assert_allclose(dS, softmax_backward(dA, A, 0.25), rtol=4 * TOL[dtype],
                               atol=4 * TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [5, 33, 128])
def test_layernorm_row_kernels(dtype, n):
    x, dy = data(dtype, ROWS, n, seed=2) + 3, data(dtype, ROWS, n, seed=3)
    gamma, beta = data(dtype, n, seed=4), data(dtype, n, seed=5)
    y, xhat, rstd = np.empty_like(x), np.empty_like(x), np.empty((ROWS, 1), dtype)
    rows_run("layernorm_fwd", dtype, x, gamma, beta, y, xhat, rstd, ROWS, n, 1e-6)
    y_ref, cache = layernorm_forward(x, gamma, beta, 1e-6)
    tol = 10 * TOL[dtype]                              # a few more roundings over a row
    for got, ref in zip((y, xhat, rstd), (y_ref, cache[0], cache[2]), strict=True):
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    dx, dgb, res = np.empty_like(x), np.empty((ROWS, 2 * n), dtype), data(dtype, ROWS, n, seed=6)
    rows_run("layernorm_bwd", dtype, dy, xhat, gamma, rstd, dx, dgb, dx, ROWS, n, 0, 1)
    dx_ref, grads = layernorm_backward(dy, cache)
    np.testing.assert_allclose(dx, dx_ref, rtol=tol, atol=tol)
    rows_run("layernorm_bwd", dtype, dy, xhat, gamma, rstd, dx, dgb, res, ROWS, n, 1, 1)
    np.testing.assert_allclose(dx, layernorm_backward(dy, cache, residual=res)[0], rtol=tol,
                               atol=tol)
    np.testing.assert_allclose(dx, dx_ref + res, rtol=tol, atol=tol)
    sums = dgb.sum(axis=0)                    # the column sum the layer takes: [dgamma | dbeta]
    np.testing.assert_allclose(sums[:n], grads["weight"], rtol=tol, atol=tol)
    np.testing.assert_allclose(sums[n:], grads["bias"], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [5, 10, 100])           # K classes: fewer and more than 32 lanes
@pytest.mark.parametrize("smooth", [0.0, 0.1])
def test_cross_entropy_row_kernel(dtype, n, smooth):
    logits = data(dtype, ROWS, n, seed=7)
    soft = np.random.default_rng(8).dirichlet(np.ones(n), ROWS).astype(dtype)   # mixup-like
    hard = np.random.default_rng(9).integers(0, n, ROWS)
    for labels, t in ((soft, soft), (hard, np.eye(n, dtype=dtype)[hard])):
        dlogits, row_loss = np.empty_like(logits), np.empty(ROWS, dtype)
        rows_run("xent", dtype, logits, np.ascontiguousarray(t), dlogits, row_loss, ROWS, n,
                 smooth)
        loss, dref = cross_entropy(logits, labels, smooth)
        tol = 10 * TOL[dtype]
        np.testing.assert_allclose(row_loss.sum(), loss, rtol=tol, atol=tol)
        np.testing.assert_allclose(dlogits, dref, rtol=tol, atol=tol)


def test_a_lane_that_skips_a_shuffle_fails_instead_of_hanging():
    """Divergence at a shuffle would deadlock a GPU warp; the emulator reports it."""
    wrong = kernels_cupy.ROWS_SRC.replace("m = warp_max(m);", "if (lane < 31) m = warp_max(m);")
    assert wrong != kernels_cupy.ROWS_SRC
    s = data("float64", ROWS, 65)
    with pytest.raises(RuntimeError, match="did not all reach a shuffle"):
        rows_run("softmax_fwd", "float64", s, np.empty_like(s), ROWS, 65, 1.0, source=wrong)


def test_a_wrong_warp_reduction_is_caught():
    """The emulated warp runs the shuffles it is given: a sum over every other lane only
    (offsets 16, 4, 1 instead of 16, 8, 4, 2, 1) fails the softmax check."""
    wrong = kernels_cupy.ROWS_SRC.replace("a += __shfl_xor_sync(0xffffffff, a, o)",
                                          "{ a += __shfl_xor_sync(0xffffffff, a, o); o >>= 1; }")
    assert wrong != kernels_cupy.ROWS_SRC
    s = data("float64", ROWS, 65)
    A = np.empty_like(s)
    rows_run("softmax_fwd", "float64", s, A, ROWS, 65, 1.0, source=wrong)
    assert not np.allclose(A, softmax_forward(s), rtol=1e-6, atol=1e-6)


H16 = 8e-3          # a few float16 roundings (eps 2^-10) of values of order 1


def f32(*arrays):
    return [a.astype(np.float32) for a in arrays]


def test_float16_element_kernels_compute_in_float():
    """Mixed precision's activations: half in, half out, float arithmetic in between, against
    the float32 plain code on the same half values."""
    x, dy, b = data("float16", 7, 33), data("float16", 7, 33, seed=1), data("float16", 33, seed=2)
    r, m = data("float16", 7, 33, seed=3), np.array([0, 1.25] * 3 + [0], np.float16)[:, None]
    y, cdf, dx, out = (np.empty_like(x) for _ in range(4))
    elementwise(kernels_cupy.ELEMENTWISE["gelu_fwd"], "float16")(x, y, cdf)
    ref, cache = gelu_forward(x.astype(np.float32), "none")
    np.testing.assert_allclose(y, ref, rtol=H16, atol=H16)
    elementwise(kernels_cupy.ELEMENTWISE["gelu_bwd"], "float16")(dy, x, cdf, dx)
    np.testing.assert_allclose(dx, gelu_backward(dy.astype(np.float32), cache)[0], rtol=H16,
                               atol=H16)
    xb = x.copy()
    elementwise(kernels_cupy.ELEMENTWISE["gelu_bias_fwd"], "float16")(b, xb, y, cdf)
    np.testing.assert_array_equal(xb, x + b)                          # one rounding, as NumPy's
    elementwise(kernels_cupy.ELEMENTWISE["masked_bias_res"], "float16")(x, b, m, r, out)
    xf, bf, mf, rf = f32(x, b, m, r)
    np.testing.assert_allclose(out, rf + (xf + bf) * mf, rtol=H16, atol=H16)
    elementwise(kernels_cupy.ELEMENTWISE["bias_res"], "float16")(x, b, r, out)
    np.testing.assert_allclose(out, xf + bf + rf, rtol=H16, atol=H16)
    elementwise(kernels_cupy.ELEMENTWISE["masked_res"], "float16")(x, m, r, out)
    np.testing.assert_allclose(out, rf + xf * mf, rtol=H16, atol=H16)


def test_float16_row_kernels_compute_in_float():
    n = 65
    s, dA = data("float16", ROWS, n), data("float16", ROWS, n, seed=1)
    A, dS = np.empty_like(s), np.empty_like(s)
    rows_run("softmax_fwd", "float16", s, A, ROWS, n, 0.25)
    np.testing.assert_allclose(A, softmax_forward(s.astype(np.float32), 0.25), rtol=H16,
                               atol=1e-3)
    rows_run("softmax_bwd", "float16", dA, A, dS, ROWS, n, 0.25)
    np.testing.assert_allclose(dS, softmax_backward(*f32(dA, A), 0.25), rtol=H16, atol=1e-3)
    x, dy = data("float16", ROWS, n, seed=2) + 3, data("float16", ROWS, n, seed=3)
    gamma, beta = data("float16", n, seed=4), data("float16", n, seed=5)
    y, xhat, rstd = np.empty_like(x), np.empty_like(x), np.empty((ROWS, 1), np.float16)
    rows_run("layernorm_fwd", "float16", x, gamma, beta, y, xhat, rstd, ROWS, n, 1e-6)
    y_ref, cache = layernorm_forward(*f32(x, gamma, beta), 1e-6)
    for got, ref in zip((y, xhat, rstd), (y_ref, cache[0], cache[2]), strict=True):
        np.testing.assert_allclose(got, ref, rtol=H16, atol=2 * H16)
    dx, dgb = np.empty_like(x), np.empty((ROWS, 2 * n), np.float16)
    res = data("float16", ROWS, n, seed=6)
    rows_run("layernorm_bwd", "float16", dy, xhat, gamma, rstd, dx, dgb, res, ROWS, n, 1, 1)
    dx_ref, grads = layernorm_backward(dy.astype(np.float32), cache,
                                       residual=res.astype(np.float32))
    np.testing.assert_allclose(dx, dx_ref, rtol=H16, atol=4 * H16)
    sums = dgb.astype(np.float32).sum(axis=0)
    np.testing.assert_allclose(sums[n:], grads["bias"], rtol=H16, atol=4 * H16)
    labels = np.arange(ROWS) % 10
    logits, t = data("float16", ROWS, 10, seed=7), np.eye(10, dtype=np.float16)[labels]
    dlogits, row_loss = np.empty_like(logits), np.empty(ROWS, np.float16)
    rows_run("xent", "float16", logits, t, dlogits, row_loss, ROWS, 10, 0.1)
    loss, dref = cross_entropy(logits.astype(np.float32), labels, 0.1)
    np.testing.assert_allclose(row_loss.astype(np.float32).sum(), loss, rtol=H16)
    np.testing.assert_allclose(dlogits, dref, rtol=H16, atol=1e-3)
