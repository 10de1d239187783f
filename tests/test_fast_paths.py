"""The fast paths (float32 erf, chunked and threaded elementwise layers, threaded batched
matmul, the workspace) against the plain whole-array formulas in minivit.reference."""
import math
import threading
import time
import warnings

import numpy as np
import pytest

from minivit import (
    ViTConfig,
    backend,
    blas,
    cross_entropy,
    init_params,
    parallel,
    vit_backward,
    vit_forward,
)
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
from minivit.layers import linear as linear_module
from minivit.reference import (
    gelu_plain,
    layernorm_backward_plain,
    layernorm_loops,
    softmax_backward_plain,
    softmax_rows,
)
from minivit.workspace import StaleCacheError, Workspace


@pytest.fixture(autouse=True)
def many_small_chunks(monkeypatch):
    """Tiny chunks and two threads, so every test crosses chunk and thread boundaries."""
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 256)
    monkeypatch.setenv("MINIVIT_THREADS", "2")


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_col_sums_match_a_float64_sum(dtype):
    rng = np.random.default_rng(6)
    for rows, n in ((0, 3), (1, 5), (777, 33), (4160, 128)):
        a = rng.standard_normal((rows, n)).astype(dtype)
        for arr in (a, np.asfortranarray(a), a[:, ::2]):
            got = parallel.col_sums(arr)
            ref = arr.astype(np.float64).sum(axis=0)
            assert got.dtype == dtype and got.shape == ref.shape
            bound = 4 * np.finfo(dtype).eps * np.sqrt(max(rows, 1)) * np.abs(arr).sum(axis=0)
            assert (np.abs(got - ref) <= bound + 1e-30).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_max_is_max(dtype):
    """parallel.row_max (maximum.reduceat over the flat chunk): max's numbers exactly, for
    rows with NaN, infinities and ties, strided chunks (max itself) and no rows."""
    rng = np.random.default_rng(9)
    for rows, n in ((0, 65), (1, 1), (1, 65), (1031, 65), (7, 128)):
        a = rng.standard_normal((rows, n)).astype(dtype)
        if rows > 3:
            a[0], a[1, 3], a[2, -1], a[3] = -np.inf, np.nan, np.inf, 2.0
        for arr in (a, a[:, ::2], a[::2]):
            got = parallel.row_max(arr)
            np.testing.assert_array_equal(got, arr.max(axis=-1, keepdims=True))
            assert got.dtype == dtype and got.shape == (arr.shape[0], 1)


def test_bmm_and_split():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((7, 4, 5, 3)), rng.standard_normal((7, 4, 3, 6))
    out = np.empty((7, 4, 5, 6))
    np.testing.assert_allclose(parallel.bmm(a, b, out), a @ b, rtol=1e-14, atol=1e-14)
    assert parallel.split(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert parallel.split(1, 2) == [(0, 1)]
    seen = []
    parallel.for_rows(lambda lo, hi: seen.append((lo, hi)), 50, 16)
    assert sorted(seen)[0][0] == 0 and sum(h - lo for lo, h in seen) == 50


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_sums_match_sum_and_ignore_chunking(dtype):
    """Row sums (and row dots): the plain sum's value, and a row's result does not depend on
    the chunk it lands in (so LayerNorm and softmax give the same bits for any thread count)."""
    a = np.random.default_rng(4).standard_normal((300, 65)).astype(dtype)
    whole, dots = parallel.row_sums(a, scale=0.5), parallel.row_sums(a, a + 1)
    assert whole.shape == (300, 1) and whole.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(whole, 0.5 * a.sum(axis=-1, keepdims=True), rtol=tol, atol=tol)
    for lo, hi in [(0, 1), (3, 7), (1, 300), (17, 160)]:
        np.testing.assert_array_equal(parallel.row_sums(a[lo:hi], scale=0.5), whole[lo:hi])
        np.testing.assert_array_equal(parallel.row_sums(a[lo:hi], a[lo:hi] + 1), dots[lo:hi])
    np.testing.assert_allclose(dots, (a * (a + 1)).sum(axis=-1, keepdims=True), rtol=tol,
                               atol=tol * 10)


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_layernorm_and_softmax_bits_independent_of_threads(monkeypatch, threads):
    """Other thread counts and chunk sizes than a one-thread run give the same bits."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 65, 128)).astype(np.float32)
    s = rng.standard_normal((8, 4, 65, 65)).astype(np.float32)
    g, b = rng.standard_normal(128).astype(np.float32), rng.standard_normal(128).astype(np.float32)
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 64 * 1024)
    monkeypatch.setenv("MINIVIT_THREADS", "1")
    want = layernorm_forward(x, g, b)[0], softmax_forward(s, 0.2)
    monkeypatch.setenv("MINIVIT_THREADS", threads)
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 16 * 1024 * int(threads))
    np.testing.assert_array_equal(layernorm_forward(x, g, b)[0], want[0])
    np.testing.assert_array_equal(softmax_forward(s, 0.2), want[1])


def train_step(params, x, y, cfg, ws):
    kw = {} if ws is None else {"workspace": ws}
    logits, cache = vit_forward(params, x, cfg, train=True, **kw)
    _, dl = cross_entropy(logits, y)
    return logits, vit_backward(dl, cache)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_workspace_steps_match_fresh_buffers(dtype):
    cfg = ViTConfig(image_size=8, patch_size=2, num_classes=3, dim=16, depth=2, heads=2,
                    mlp_dim=24)
    params = init_params(cfg, seed=0, dtype=dtype, zero_head=False)
    rng = np.random.default_rng(4)
    ws = Workspace()
    for step in range(3):                  # buffers are reused from the second step on
        x = rng.standard_normal((4, 3, 8, 8)).astype(dtype)
        y = rng.integers(0, 3, 4)
        l0, (d0, g0) = train_step(params, x, y, cfg, None)
        l1, (d1, g1) = train_step(params, x, y, cfg, ws)
        np.testing.assert_array_equal(l1, l0)
        np.testing.assert_array_equal(d1, d0)
        for k in g0:
            np.testing.assert_array_equal(g1[k], g0[k], err_msg=f"{k} step {step}")
    assert ws.nbytes() > 0


def test_stale_cache_is_refused():
    cfg = ViTConfig(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2,
                    mlp_dim=8)
    params = init_params(cfg, dtype="float32", zero_head=False)
    x = np.ones((2, 3, 8, 8), np.float32)
    ws = Workspace()
    logits, old = vit_forward(params, x, cfg, workspace=ws)
    vit_forward(params, x, cfg, workspace=ws)
    with pytest.raises(StaleCacheError, match="overwritten"):
        vit_backward(logits, old)


def test_thread_pool_survives_fork():
    """A forked child (e.g. a data-loading worker) gets a fresh pool instead of a dead one."""
    import multiprocessing as mp
    x = np.random.default_rng(5).standard_normal((64, 40)).astype(np.float32)
    gelu_forward(x)                                  # the parent's pool exists now
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        y = pool.apply_async(_gelu_in_child, (x,)).get(timeout=60)
    np.testing.assert_array_equal(y, gelu_forward(x)[0])


def _gelu_in_child(x):
    return gelu_forward(x)[0]


def float_arrays(obj):
    """Every NumPy float array inside a nested cache (dicts, tuples, lists)."""
    if isinstance(obj, np.ndarray):
        return [obj] if obj.dtype.kind == "f" else []
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return [a for o in obj for a in float_arrays(o)]
    return []


def test_float32_step_has_no_silent_upcast():
    cfg = ViTConfig(image_size=8, patch_size=2, num_classes=3, dim=16, depth=2, heads=2,
                    mlp_dim=24, dropout=0.1, attn_dropout=0.1, drop_path=0.1)
    params = init_params(cfg, dtype="float32", zero_head=False)
    x = np.random.default_rng(6).standard_normal((4, 3, 8, 8)).astype(np.float32)
    logits, cache = vit_forward(params, x, cfg, train=True, rng=backend.default_rng(0),
                                workspace=Workspace())
    _, dl = cross_entropy(logits, np.array([0, 1, 2, 0]))
    dimages, grads = vit_backward(dl, cache)
    arrays = float_arrays(cache) + [logits, dl, dimages, *grads.values()]
    assert len(arrays) > 50
    assert {a.dtype for a in arrays} == {np.dtype(np.float32)}


def test_layernorm_backward_is_deterministic_with_threads(monkeypatch):
    """dgamma/dbeta add the per-chunk sums in row order, not in the order threads finish."""
    monkeypatch.setenv("MINIVIT_THREADS", "2")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 65, 128)).astype(np.float32)
    g, b = rng.standard_normal(128).astype(np.float32), rng.standard_normal(128).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    _, cache = layernorm_forward(x, g, b)
    first = layernorm_backward(dy, cache)[1]
    for _ in range(30):
        again = layernorm_backward(dy, cache)[1]
        for k in first:
            np.testing.assert_array_equal(again[k], first[k], err_msg=k)


@pytest.mark.parametrize("shape,split", [((300, 40, 70), True), ((50, 300, 200), True),
                                         ((3, 5, 2), False)])
def test_split_matmul_where_minivit_owns_the_cores(monkeypatch, shape, split):
    """parallel.matmul cuts a product into row blocks (M >= N) or column blocks (N > M), or
    leaves a small one whole; each gives a @ b, into a slice of a larger output too."""
    monkeypatch.setattr(parallel, "SPLIT_MIN_MACS", 100)
    monkeypatch.setattr(blas, "_depth", 1)                   # owning, whatever this BLAS is
    calls = []
    real = parallel.parallel

    def spy(fn, rows, min_rows=1):
        calls.append(rows)
        return real(fn, rows, min_rows)
    monkeypatch.setattr(parallel, "parallel", spy)
    m, k, n = shape
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    big = np.zeros((m, n + 3))
    got = parallel.matmul(a.T.copy().T, b)                           # a Fortran-ordered a
    parallel.matmul(a, b, big[:, 1:n + 1])
    assert calls == ([max(m, n)] * 2 if split else [])
    np.testing.assert_allclose(got, a @ b, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(big[:, 1:n + 1], a @ b, rtol=1e-13, atol=1e-13)
    assert not big[:, 0].any() and not big[:, n + 1:].any()
    monkeypatch.setattr(blas, "_depth", 0)                   # not owning: one plain call
    parallel.matmul(a, b)
    assert len(calls) == (2 if split else 0)


def openblas_or_skip():
    controls = blas.openblas_controls()
    if not controls:
        pytest.skip("NumPy's BLAS is not a pthreads OpenBLAS this process can reach")
    return controls[0]


def test_owned_threads_sets_openblas_to_one_and_restores_it(monkeypatch):
    """Inside (nested too) OpenBLAS runs one thread; on leaving, even by an exception, it has
    its count back. The model's forward and backward run inside."""
    get, put = openblas_or_skip()
    before = get()
    put(2)
    try:
        with pytest.raises(RuntimeError):
            with blas.owned_threads():
                assert get() == 1
                with blas.owned_threads():
                    assert get() == 1 and blas._depth == 2
                assert get() == 1
                raise RuntimeError
        assert get() == 2 and blas._depth == 0 and not blas.owning()
        seen = []
        cfg = ViTConfig(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2,
                        mlp_dim=16)
        params = init_params(cfg, dtype="float32")
        x = np.zeros((2, 3, 8, 8), np.float32)

        def spy(a, b, out=None):
            seen.append((blas.owning(), get()))
            return parallel.matmul(a, b, out)
        monkeypatch.setattr(linear_module, "matmul", spy)
        logits, cache = vit_forward(params, x, cfg)
        vit_backward(np.ones_like(logits), cache)
        assert seen and all(owned and n == 1 for owned, n in seen)
        assert get() == 2
    finally:
        put(before)


def test_owned_threads_across_threads():
    """The last scope to close restores OpenBLAS, whichever thread opened first."""
    get, put = openblas_or_skip()
    before = get()
    put(2)
    inside, leave = threading.Event(), threading.Event()

    def other():
        with blas.owned_threads():
            inside.set()
            leave.wait(10)
    try:
        t = threading.Thread(target=other)
        t.start()
        assert inside.wait(10)
        with blas.owned_threads():
            assert get() == 1
        assert get() == 1 and blas.owning()           # the other thread's scope is still open
        leave.set()
        t.join(10)
        assert get() == 2 and not blas.owning()
    finally:
        leave.set()
        put(before)


def test_run_shares_waits_for_the_others_when_the_first_fails():
    finished = threading.Event()

    def slow():
        time.sleep(0.2)
        finished.set()

    def boom():
        raise ValueError("share 0 failed")
    with pytest.raises(ValueError, match="share 0 failed"):
        parallel.run_shares([boom, slow])
    assert finished.is_set()
    assert parallel.run_shares([lambda: parallel.inline(), lambda: 2]) == [True, 2]
    assert not parallel.inline()
    nested = parallel.run_shares([lambda: parallel.run_shares([lambda: 1, lambda: 2]),
                                  lambda: 3])
    assert nested == [[1, 2], 3]
