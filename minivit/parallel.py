"""Elementwise work over row chunks, spread over the CPU cores.

NumPy runs a ufunc (exp, multiply, ...) on one core, and a chain of them over a large array
streams it through memory once per ufunc. `for_rows(fn, rows, row_bytes, xp)` instead calls
fn(lo, hi) on row ranges of about CHUNK_BYTES per array, so a chain of ufuncs on one range stays in
the L2 cache (or L3: chunks are larger with several threads, default_chunk_bytes), and hands the
ranges to a small thread pool (NumPy releases the GIL inside ufuncs and matmul). Each fn writes
only rows lo:hi of its outputs, so the ranges never race.
On CuPy the GPU already runs each kernel in parallel: fn(0, rows) is called once.

Inside minivit.blas.owned_threads() (OpenBLAS held at one thread) this pool also runs the GEMMs,
cut into blocks (`matmul`), and whole shares of a batch (`run_shares`, minivit.data_parallel).

Threads: MINIVIT_THREADS, else the number of cores this process may use.
"""
import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy

from . import batched_gemm, blas, kernels_cupy

CHUNK_BYTES = 256 * 1024     # per array: a chunk and its few temporaries fit a 1 MiB L2
GIL_FACTOR = 4               # chunks this many times larger where threads share the GIL
SPLIT_MIN_MACS = 1 << 20     # a product below ~1M multiply-adds is cheaper whole than handed off
_pool = None
_pool_pid = None
_ones = {}                   # (xp, dtype) -> a ones vector for col_sums (grown, never written)
_local = threading.local()   # .inline: this thread runs one share of run_shares (no hand-offs)


def num_threads() -> int:
    env = os.environ.get("MINIVIT_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def _executor(n):
    """The pool of n threads, made anew after a fork (a child inherits no threads)."""
    global _pool, _pool_pid
    if _pool is None or _pool._max_workers != n or _pool_pid != os.getpid():
        _pool, _pool_pid = ThreadPoolExecutor(max_workers=n, thread_name_prefix="minivit"), \
            os.getpid()
    return _pool


def split(rows, parts):
    """`parts` contiguous (lo, hi) ranges covering [0, rows), sizes differing by at most 1."""
    q, r = divmod(rows, parts)
    bounds = [i * q + min(i, r) for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i] < bounds[i + 1]]


def for_rows(fn, rows, row_bytes, xp=numpy, chunk_bytes=None):
    """Call fn(lo, hi) over [0, rows): cache-sized ranges, one contiguous share per thread."""
    if xp is not numpy or rows == 0:
        if rows:
            fn(0, rows)
        return
    step = max(1, (chunk_bytes or default_chunk_bytes()) // max(1, row_bytes))

    def run(lo, hi):
        for a in range(lo, hi, step):
            fn(a, min(a + step, hi))
    parallel(run, rows, min_rows=step)


def default_chunk_bytes():
    """CHUNK_BYTES on one thread. With more, GIL_FACTOR times that: every ufunc call releases
    the GIL and takes it back, and with two threads calling ufuncs the hand-offs cost more than
    the cache misses of larger chunks (two shares at batch 128: training 1.12-1.18x and the
    forward 1.12-1.55x faster with 1 MiB than with 256 KiB chunks; on one thread the forward
    was 1.07x faster with 256 KiB; BENCHMARKS.md, twelfth session)."""
    return CHUNK_BYTES * (GIL_FACTOR if num_threads() > 1 else 1)


def parallel(fn, rows, min_rows=1):
    """Call fn(lo, hi) once per thread on contiguous shares of [0, rows) (the caller's thread
    takes the first share). Shares smaller than min_rows are not split off. Inside a share of
    run_shares the thread already has its core: fn(0, rows) runs there."""
    n = 1 if inline() else min(num_threads(), max(1, rows // max(1, min_rows)))
    shares = split(rows, n)
    if len(shares) <= 1:
        if rows:
            fn(0, rows)
        return
    futures = [_executor(num_threads() - 1).submit(fn, lo, hi) for lo, hi in shares[1:]]
    _first_then_rest(lambda: fn(*shares[0]), futures)


def _first_then_rest(first, futures):
    """first() on this thread, then the futures' results in order. If first() raises, the other
    threads are waited for before the error goes up: none is left writing into shared buffers."""
    try:
        result = first()
    except BaseException:
        wait(futures)
        raise
    return [result] + [f.result() for f in futures]


def inline() -> bool:
    """True on a thread that runs one share of run_shares: its ops run there, unsplit."""
    return getattr(_local, "inline", False)


def _run_inline(fn):
    before = inline()
    _local.inline = True
    try:
        return fn()
    finally:
        _local.inline = before


def run_shares(fns):
    """[fn() for fn in fns], each on its own thread (the first on the caller's), in order. Every
    op inside runs on that thread alone: no nested hand-offs (minivit.data_parallel). Called
    from inside a share, the fns run one after the other there."""
    if inline():
        return [fn() for fn in fns]
    if len(fns) > num_threads():
        raise ValueError(f"{len(fns)} shares for {num_threads()} threads")
    futures = [_executor(num_threads() - 1).submit(_run_inline, fn) for fn in fns[1:]]
    return _first_then_rest(lambda: _run_inline(fns[0]), futures)


def scratch(slot, shape, dtype, xp=numpy):
    """A buffer of `shape` for temporaries of one chunk, this thread's own (slot 0, 1, ...): the
    same memory chunk after chunk and step after step. Fresh temporaries of a chunk's size
    (~256 KiB) cost page faults each time glibc hands their memory back to the system.
    Only for work that is finished before the chunk function returns. On CuPy: a fresh array
    (CuPy's memory pool already reuses device memory)."""
    if xp is not numpy:
        return xp.empty(shape, dtype)
    bufs = _local.__dict__.setdefault("scratch", {})
    n = math.prod(shape)
    key = (slot, numpy.dtype(dtype).str)
    if key not in bufs or bufs[key].size < n:
        bufs[key] = numpy.empty(max(n, CHUNK_BYTES // numpy.dtype(dtype).itemsize), dtype)
    return bufs[key][:n].reshape(shape)


def col_sums(a):
    """sum_i a_ij of a 2-D (rows, n) array -> (n,): bias, LayerNorm and E_pos gradients, as
    ones(rows) @ a, one GEMV: on NumPy ~3x faster than sum(axis=0) (which adds the rows one
    after another all the same), on CuPy several times faster than its reduction over axis 0
    (BENCHMARKS.md). Plain sum(axis=0) for float16 on NumPy (no BLAS GEMV) and for CuPy with
    the fused kernels off (MINIVIT_FUSED=0)."""
    xp = _xp_of(a)
    if not kernels_cupy.enabled(a) and (xp is not numpy or a.ndim != 2 or
                                        a.dtype.char not in "fd"):
        return a.sum(axis=0)
    key = (xp.__name__, a.dtype.str)
    ones = _ones.get(key)
    if ones is None or ones.shape[0] < a.shape[0]:
        ones = _ones[key] = xp.ones(max(a.shape[0], 1024), a.dtype)
    return ones[:a.shape[0]] @ a


def row_sums(a, b=None, scale=1.0):
    """scale * sum_j a_ij (times b_ij if given) for a 2-D chunk (rows, n), as a (rows, 1) column.
    einsum runs one SIMD loop per row, ~2x faster than NumPy's sum or mean over a short last
    axis (65 scores, 128 features; BENCHMARKS.md) and with no temporary for a * b; a row's
    result does not depend on the chunk it is in (a BLAS gemv's does), so no output depends on
    the threads."""
    xp = _xp_of(a)
    s = (xp.einsum("ij->i", a) if b is None else xp.einsum("ij,ij->i", a, b))[:, None]
    if scale != 1.0:
        s *= scale
    return s


def row_max(a):
    """max_j a_ij of a 2-D chunk (rows, n), as a (rows, 1) column (softmax's shift). NumPy's
    max over a short last axis runs row by row (~45 ns a row of 65 scores); maximum.reduceat
    over the flat C-contiguous chunk, cut at the row starts, is ~2.3x faster (BENCHMARKS.md)
    and the same numbers (a max rounds nothing; NaN propagates as in max)."""
    xp = _xp_of(a)
    if xp is not numpy or not a.flags.c_contiguous or a.size == 0:
        return a.max(axis=-1, keepdims=True)
    return numpy.maximum.reduceat(a.reshape(-1), _row_starts(*a.shape))[:, None]


@functools.lru_cache(maxsize=64)
def _row_starts(rows, n):
    return numpy.arange(0, rows * n, n)


def bmm(a, b, out):
    """out[i] = a[i] @ b[i] over the leading (batch) axis, the batch split over the threads:
    NumPy runs a stack of small products (B*heads of (T, Dh) @ (Dh, T)) on one core."""
    if type(out).__module__.split(".")[0] != "numpy":
        if out.flags.c_contiguous:                     # one launch, transposed views as they lie
            return batched_gemm.matmul(a, b, out, _xp_of(out))
        out[...] = _xp_of(out).matmul(a, b)            # a strided view of heads: a copy
        return out
    parallel(lambda lo, hi: numpy.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi]), out.shape[0])
    return out


def matmul(a, b, out=None):
    """a @ b for 2-D a (M, K), b (K, N), into out (M, N) if given (a row or column slice too).
    Where minivit owns the cores (minivit.blas.owned_threads), a large product is cut into one
    block of rows per thread (columns when N > M), each a single-threaded BLAS call. Elsewhere,
    or small: NumPy's (or CuPy's) matmul as it stands."""
    xp = _xp_of(a)
    if out is None:
        out = xp.empty((a.shape[0], b.shape[1]), xp.result_type(a, b))
    M, N = out.shape
    if xp is not numpy or not blas.owning() or inline() or M * N * a.shape[1] < SPLIT_MIN_MACS:
        return xp.matmul(a, b, out=out)
    if M >= N:
        parallel(lambda lo, hi: numpy.matmul(a[lo:hi], b, out=out[lo:hi]), M, min_rows=16)
    else:
        parallel(lambda lo, hi: numpy.matmul(a, b[:, lo:hi], out=out[:, lo:hi]), N, min_rows=16)
    return out


def _xp_of(a):
    from .backend import get_array_module  # noqa: PLC0415 - backend imports nothing from here
    return get_array_module(a)
