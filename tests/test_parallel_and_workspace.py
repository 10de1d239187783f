"""minivit.parallel (row and column sums, row max, batched and split matmul, the thread pool),
minivit.blas (OpenBLAS threads while minivit owns the cores) and the workspace: same numbers
as the plain formulas for any chunk or thread count, and the same as fresh buffers."""
import threading
import time

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
from minivit.layers import (
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    softmax_forward,
)
from minivit.layers import linear as linear_module
from minivit.workspace import StaleCacheError, Workspace

# Tiny chunks and two threads, so every test crosses chunk and thread boundaries.
pytestmark = pytest.mark.usefixtures("many_small_chunks")


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
