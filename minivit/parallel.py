"""Elementwise work over row chunks, spread over the CPU cores.

NumPy runs a ufunc (exp, multiply, ...) on one core, and a chain of them over a large array
streams it through memory once per ufunc. `for_rows(fn, rows, row_bytes, xp)` instead calls
fn(lo, hi) on row ranges of about CHUNK_BYTES per array, so a chain of ufuncs on one range stays in
the L2 cache, and hands the ranges to a small thread pool (NumPy releases the GIL inside ufuncs and
matmul). Each fn writes only rows lo:hi of its outputs, so the ranges never race.
On CuPy the GPU already runs each kernel in parallel: fn(0, rows) is called once.

One pool for the GEMMs too: after a product OpenBLAS keeps its worker threads spinning for a while
(~0.1 s), so the elementwise work that follows shared the cores with them (GELU forward ran
slower on two threads than on one). Inside `owned_threads()` (the model's forward and backward, a
training step, evaluation) OpenBLAS is set to one thread and `matmul` cuts each large product
into one block of rows (or columns) per thread of this pool; on leaving, OpenBLAS gets its thread
count back. With another BLAS (MKL, Accelerate) nothing changes: BLAS threads its own products.

Threads: MINIVIT_THREADS, else the number of cores this process may use.
"""
import contextlib
import ctypes
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy

CHUNK_BYTES = 256 * 1024     # per array: a chunk and its few temporaries fit a 1 MiB L2
_pool = None
_pool_pid = None
_local = threading.local()    # .inline: this thread runs one share of run_shares (no hand-offs)


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
    takes the first share). Shares smaller than min_rows are not split off. Inside a share of
    run_shares the thread already has its core: fn(0, rows) runs there."""
    n = 1 if getattr(_local, "inline", False) else \
        min(num_threads(), max(1, rows // max(1, min_rows)))
    shares = split(rows, n)
    if len(shares) <= 1:
        if rows:
            fn(0, rows)
        return
    futures = [_executor(num_threads() - 1).submit(fn, lo, hi) for lo, hi in shares[1:]]
    fn(*shares[0])
    for f in futures:
        f.result()


def run_shares(fns):
    """[fn() for fn in fns], each on its own thread (the first on the caller's), in order. Every
    op inside runs on that thread alone: no nested hand-offs (minivit.data_parallel)."""
    def inline(fn):
        _local.inline = True
        try:
            return fn()
        finally:
            _local.inline = False
    if len(fns) > num_threads():
        raise ValueError(f"{len(fns)} shares for {num_threads()} threads")
    futures = [_executor(num_threads() - 1).submit(inline, fn) for fn in fns[1:]]
    first = inline(fns[0])
    return [first] + [f.result() for f in futures]


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


def matmul(a, b, out):
    """out = a @ b for 2-D a (M, K), b (K, N), out (M, N) (out may be a row or column slice).
    Inside owned_threads(): one block of rows of `out` per thread (columns when N > M), each a
    single-threaded BLAS product. Elsewhere, or small: NumPy's matmul as it stands."""
    xp = _xp_of(out)
    M, N = out.shape
    if xp is not numpy or not _owned or M * N * a.shape[1] < SPLIT_MIN_MACS:
        return xp.matmul(a, b, out=out)
    if M >= N:
        parallel(lambda lo, hi: numpy.matmul(a[lo:hi], b, out=out[lo:hi]), M, min_rows=16)
    else:
        parallel(lambda lo, hi: numpy.matmul(a, b[:, lo:hi], out=out[:, lo:hi]), N, min_rows=16)
    return out


SPLIT_MIN_MACS = 1 << 20      # below ~1M multiply-adds one call is cheaper than a hand-off
_owned = 0                    # depth of owned_threads() scopes that hold OpenBLAS at 1 thread


def _openblas_controls():
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (NumPy's, and
    SciPy's own copy if any), found in /proc/self/maps and called through ctypes. [] elsewhere:
    not Linux, or a BLAS that is not OpenBLAS."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f
                            if "openblas" in line.lower() and line.split()[-1].startswith("/")})
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""),
                               ("openblas", "64_"), ("openblas", "")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                found.append((get, put))
                break
    return found


@functools.lru_cache(maxsize=1)
def _blas():
    return _openblas_controls()


@contextlib.contextmanager
def owned_threads():
    """Run the block with minivit's pool doing all the CPU work, GEMMs included: OpenBLAS at one
    thread (its count restored on exit, even on error). A no-op with one thread, without
    OpenBLAS, and nested inside another such block. The products' rounding can differ in the
    last bits from BLAS's own threading (other blocks); for a given thread count it is the same
    from run to run."""
    global _owned
    controls = _blas() if num_threads() > 1 and not _owned else []
    if not controls and not _owned:
        yield
        return
    saved = [get() for get, _ in controls]
    for _, put in controls:
        put(1)
    _owned += 1
    try:
        yield
    finally:
        _owned -= 1
        for (_, put), n in zip(controls, saved, strict=True):
            put(n)


def owning() -> bool:
    """True inside owned_threads() where OpenBLAS is held at one thread."""
    return _owned > 0


def owns_threads(fn):
    """Decorator: fn runs inside owned_threads()."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with owned_threads():
            return fn(*args, **kwargs)
    return wrapper


def _xp_of(a):
    from .backend import get_array_module  # noqa: PLC0415 - backend imports nothing from here
    return get_array_module(a)
