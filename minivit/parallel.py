"""Elementwise work over row chunks, spread over the CPU cores.

NumPy runs a ufunc (exp, multiply, ...) on one core, and a chain of them over a large array
streams it through memory once per ufunc. `for_rows(fn, rows, row_bytes, xp)` instead calls
fn(lo, hi) on row ranges of about CHUNK_BYTES per array, so a chain of ufuncs on one range stays in
the L2 cache, and hands the ranges to a small thread pool (NumPy releases the GIL inside ufuncs and
matmul). Each fn writes only rows lo:hi of its outputs, so the ranges never race.
On CuPy the GPU already runs each kernel in parallel: fn(0, rows) is called once.

Threads: MINIVIT_THREADS, else the number of cores this process may use.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy

CHUNK_BYTES = 256 * 1024     # per array: a chunk and its few temporaries fit a 1 MiB L2
_pool = None
_pool_pid = None


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
    step = max(1, (chunk_bytes or CHUNK_BYTES) // max(1, row_bytes))

    def run(lo, hi):
        for a in range(lo, hi, step):
            fn(a, min(a + step, hi))
    parallel(run, rows, min_rows=step)


def parallel(fn, rows, min_rows=1):
    """Call fn(lo, hi) once per thread on contiguous shares of [0, rows) (the caller's thread
    takes the first share). Shares smaller than min_rows are not split off."""
    n = min(num_threads(), max(1, rows // max(1, min_rows)))
    shares = split(rows, n)
    if len(shares) <= 1:
        if rows:
            fn(0, rows)
        return
    futures = [_executor(num_threads() - 1).submit(fn, lo, hi) for lo, hi in shares[1:]]
    fn(*shares[0])
    for f in futures:
        f.result()


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


def bmm(a, b, out):
    """out[i] = a[i] @ b[i] over the leading (batch) axis, the batch split over the threads:
    NumPy runs a stack of small products (B*heads of (T, Dh) @ (Dh, T)) on one core."""
    if type(out).__module__.split(".")[0] != "numpy":
        out[...] = _xp_of(out).matmul(a, b)            # out may be a strided view of heads
        return out
    parallel(lambda lo, hi: numpy.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi]), out.shape[0])
    return out


def _xp_of(a):
    from .backend import get_array_module  # noqa: PLC0415 - backend imports nothing from here
    return get_array_module(a)
