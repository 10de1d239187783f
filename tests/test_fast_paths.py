"""The fast paths (float32 erf and normal CDF, chunked and threaded GELU, LayerNorm and softmax)
against the plain whole-array formulas in minivit.reference. The parallel primitives, OpenBLAS
threads and the workspace: tests/test_parallel_and_workspace.py."""
import math
import warnings

import numpy as np
import pytest

from minivit import backend
from minivit import erf as erf_module
from minivit.erf import erf_float32, normal_cdf_float32
from minivit.layers import (
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    softmax_backward,
    softmax_forward,
)
from minivit.reference import (
    gelu_plain,
    layernorm_backward_plain,
    layernorm_loops,
    softmax_backward_plain,
    softmax_rows,
)

# Tiny chunks and two threads, so every test crosses chunk and thread boundaries.
pytestmark = pytest.mark.usefixtures("many_small_chunks")


def test_erf_float32_within_4_ulp_and_dispatch():
    x = np.concatenate([np.linspace(-7, 7, 200_001), [0.0, -0.0, 4.0, -4.0, 1e-30, 3e38]])
    x32 = x.astype(np.float32)
    ref = np.array([math.erf(v) for v in x32.astype(np.float64)])
    got = erf_float32(x32)
    assert got.dtype == np.float32
    assert np.abs(got - ref).max() < 5e-7
    assert np.abs(got[np.abs(x32) < 1e-3] - ref[np.abs(x32) < 1e-3]).max() < 1e-9
    assert np.isnan(erf_float32(np.array([np.nan], np.float32))).all()
    np.testing.assert_array_equal(erf_float32(np.array([np.inf, -np.inf], np.float32)), [1, -1])
    np.testing.assert_array_equal(backend.erf(x32), got)          # float32 -> fast path
    assert backend.erf(x).dtype == np.float64                     # float64 -> Cody (1e-16)
    assert np.abs(backend.erf(x) - np.array([math.erf(v) for v in x])).max() <= 1e-15


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-14), (np.float32, 2e-6)])
def test_gelu_matches_plain(approximate, dtype, tol):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 7, 33)) * 3).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, cache = gelu_forward(x, approximate)
    dx, _ = gelu_backward(dy, cache)
    y_ref, d_ref = gelu_plain(x, approximate)
    assert y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, dy * d_ref, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_adds_a_bias_in_its_pass(approximate):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 9, 40)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    want, want_cache = gelu_forward(x + b, approximate)
    for h in (x.copy(), x.transpose(1, 0, 2).copy().transpose(1, 0, 2)):   # C and strided
        got, cache = gelu_forward(h, approximate, bias=b)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(h, x + b)                 # the cache holds x + b
        np.testing.assert_array_equal(cache[0], x + b)
        np.testing.assert_array_equal(cache[1], want_cache[1])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_grad_out_stores_the_derivative(approximate, dtype):
    """grad_out=: GELU'(x + b) written in the forward's pass; backward is then dy * GELU',
    the same numbers as the backward that computes GELU' from x and Phi."""
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((3, 11, 40)) * 3).astype(dtype)
    b, dy = rng.standard_normal(40).astype(dtype), rng.standard_normal(x.shape).astype(dtype)
    want, want_cache = gelu_forward(x + b, approximate)
    want_dx, _ = gelu_backward(dy, want_cache)
    grad = np.empty_like(x)
    got, cache = gelu_forward(x.copy(), approximate, bias=b, grad_out=grad)
    np.testing.assert_array_equal(got, want)
    assert cache[0] is None and cache[1] is None and cache[3] is grad   # GELU' alone
    dx, _ = gelu_backward(dy, cache)
    np.testing.assert_array_equal(dx, want_dx)
    for bad in (np.empty((40, 11, 3), dtype).T, np.empty((3, 11, 41), dtype)):
        with pytest.raises(ValueError, match="C-contiguous buffer of x's shape"):
            gelu_forward(x.copy(), approximate, grad_out=bad)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_layernorm_matches_plain(dtype, tol):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((5, 9, 24)) * 3 + 2).astype(dtype)
    g, b = rng.standard_normal(24).astype(dtype), rng.standard_normal(24).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, cache = layernorm_forward(x, g, b)
    dx, grads = layernorm_backward(dy, cache)
    x64, g64, dy64 = (a.astype(np.float64) for a in (x, g, dy))
    dx_ref, dg_ref, db_ref = layernorm_backward_plain(dy64, x64, g64)
    assert y.dtype == dtype and dx.dtype == dtype and grads["weight"].dtype == dtype
    np.testing.assert_allclose(y, layernorm_loops(x64, g64, b.astype(np.float64)), rtol=tol,
                               atol=tol)
    np.testing.assert_allclose(dx, dx_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(grads["weight"], dg_ref, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(grads["bias"], db_ref, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 1e-6)])
def test_softmax_matches_plain_with_scale(dtype, tol):
    rng = np.random.default_rng(2)
    s = (rng.standard_normal((2, 3, 17, 17)) * 4).astype(dtype)
    dA = rng.standard_normal(s.shape).astype(dtype)
    A = softmax_forward(s, scale=0.25)
    A_ref = softmax_rows(0.25 * s.astype(np.float64))
    np.testing.assert_allclose(A, A_ref, rtol=tol, atol=tol)
    dS = softmax_backward(dA, A, scale=0.25)
    np.testing.assert_allclose(dS, 0.25 * softmax_backward_plain(dA.astype(np.float64), A_ref),
                               rtol=tol * 10, atol=tol)
    assert A.dtype == dtype and dS.dtype == dtype
    before = s.copy()
    softmax_forward(s, out=s)                                     # in place is allowed
    np.testing.assert_allclose(s, softmax_rows(before.astype(np.float64)), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_rows_with_wide_spreads_masks_and_nans(dtype):
    """Rows with a wide spread of scores, -inf masks and NaNs: the same probabilities as the
    plain softmax, no warning for the finite rows, each row the same as when computed alone,
    and in place too."""
    rng = np.random.default_rng(3)
    s = rng.standard_normal((40, 65)).astype(dtype)
    s[3, 7] = 2000.0                                  # exp(2000 - mean) would overflow
    s[11, :30] = -np.inf                              # a mask
    s[12] = -np.inf                                   # a fully masked row
    s[20, 5] = np.nan
    s[31] = 1e4 * rng.standard_normal(65)             # a spread of ~1e4 on every row
    s[32] = 3e38                                      # every score huge, spread 0
    with np.errstate(all="ignore"):
        ref = softmax_rows(0.5 * s.astype(np.float64))
    ok = ~np.isnan(ref).any(axis=1)
    assert set(np.flatnonzero(~ok)) == {12, 20}       # as the plain softmax: NaN rows stay NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # only the NaN rows may warn
        softmax_forward(s[ok], scale=0.5)
    with np.errstate(all="ignore"):
        A = softmax_forward(s, scale=0.5)
        A_in_place = s.copy()
        softmax_forward(A_in_place, scale=0.5, out=A_in_place)
    assert np.isnan(A[~ok]).all() and np.isnan(A_in_place[~ok]).all()
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(A[ok], ref[ok], rtol=tol, atol=tol)
    np.testing.assert_array_equal(A_in_place, A)
    for i in (0, 3, 11, 31, 32):                      # a row does not depend on its neighbours
        np.testing.assert_array_equal(softmax_forward(s[i:i + 1], scale=0.5)[0], A[i])


def test_normal_cdf_float32_matches_erf():
    x = np.concatenate([np.linspace(-9, 9, 200_001), [0.0, -0.0, 1e-30, 1e4, -1e4, 3e38, -3e38,
                                                      np.inf, -np.inf]]).astype(np.float32)
    out, u = np.empty_like(x), np.empty_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # huge |x| overflows quietly
        got = normal_cdf_float32(x, out, u)
    assert got is out and got.dtype == np.float32
    ref = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x.astype(np.float64)])
    assert np.abs(got - ref).max() < 1e-7
    assert (got[x <= -5.9] == 0).all() and (got[x >= 5.9] == 1).all()   # GELU exact out there
    assert np.isnan(normal_cdf_float32(np.array([np.nan], np.float32), np.empty(1, np.float32),
                                       np.empty(1, np.float32))).all()


def test_phi_tanh_coefficients_refit_and_g_rises_everywhere():
    """erf.PHI_TANH_G: a weighted minimax fit of g(x) = atanh(2 Phi(x) - 1) by x P(x^2), degree
    13, on [0, 5.9] (Lawson's iteration; weight dPhi/dg = sech^2(g) / 2). Refit here: the stored
    coefficients are as good as a fresh fit. And g' has no real root: g rises everywhere, so
    Phi needs no clipping past the fitted range."""
    c = np.array(erf_module.PHI_TANH_G)
    x = np.linspace(1e-4, 5.9, 4001)
    erfc = np.array([math.erfc(v / math.sqrt(2.0)) for v in x])
    g = 0.5 * np.log((2.0 - erfc) / erfc)
    w = 0.5 / np.cosh(g) ** 2
    V = np.stack([x ** (2 * i + 1) for i in range(len(c))], axis=1)
    lawson, best = np.ones_like(x), np.inf
    for _ in range(60):
        sw = w * np.sqrt(lawson)
        fit = np.linalg.lstsq(V * sw[:, None], g * sw, rcond=None)[0]
        err = np.abs(V @ fit - g) * w
        best = min(best, err.max())
        lawson *= err / err.max() + 1e-3
    stored = (np.abs(V @ c - g) * w).max()
    assert stored < 3e-8 and stored <= best * 1.01
    dg = np.zeros(2 * len(c))                      # g'(x) = sum (2i+1) c_i x^(2i), highest first
    for i, ci in enumerate(c):
        dg[-1 - 2 * i] = (2 * i + 1) * ci
    roots = np.roots(dg[np.argmax(dg != 0):])
    assert (np.abs(roots.imag) > 1e-6).all()
