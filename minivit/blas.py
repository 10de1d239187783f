"""Who runs the CPU threads: OpenBLAS's pool, or minivit's (minivit.parallel).

After a product, OpenBLAS keeps its worker threads spinning for a while (~0.1 s) to pick up the
next one quickly. minivit's elementwise work between two GEMMs (GELU, LayerNorm, softmax) then
shares the cores with those spinners: GELU forward ran slower on two threads than on one.
Inside `owned_threads()` OpenBLAS runs one thread, so its workers fall asleep, and minivit's
own pool does all the parallel work: the GEMMs cut into blocks (parallel.matmul) and whole
shares of a batch (minivit.data_parallel). On leaving, OpenBLAS gets its thread count back.

OpenBLAS is reached through ctypes: the libraries whose path contains "openblas" in
/proc/self/maps (Linux) when first asked, with the pthreads threading NumPy's wheels use. Any
other case (another BLAS such as MKL or Accelerate, an OpenMP OpenBLAS whose thread count is per
thread, no /proc) leaves the scope a no-op: BLAS then threads its own products as before.
"""
import contextlib
import ctypes
import functools
import threading

_lock = threading.Lock()     # entering and leaving a scope are atomic across threads
_depth = 0                   # open owned_threads() scopes (any thread); OpenBLAS at 1 while > 0
_saved = []                  # thread counts to restore when the last scope closes
_PTHREADS = 1                # openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP


def _controls_of(lib):
    """(get, set) of one OpenBLAS library with pthreads threading, or None."""
    for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""),
                           ("openblas", "64_"), ("openblas", "")):
        get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
        put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
        kind = getattr(lib, f"{prefix}_get_parallel{suffix}", None)
        if get is None or put is None or kind is None:
            continue
        kind.restype, kind.argtypes = ctypes.c_int, []
        if kind() != _PTHREADS:
            return None
        get.restype, get.argtypes = ctypes.c_int, []
        put.restype, put.argtypes = None, [ctypes.c_int]
        return get, put
    return None


@functools.lru_cache(maxsize=1)
def openblas_controls():
    """[(get, set), ...] for every pthreads OpenBLAS loaded when first called (NumPy's; SciPy's
    own copy if already imported), [] where there is none to reach."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f
                            if "openblas" in line.lower() and line.split()[-1].startswith("/")})
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            controls = _controls_of(ctypes.CDLL(path))
        except OSError:
            continue
        if controls is not None:
            found.append(controls)
    return found


def owning() -> bool:
    """True while some owned_threads() scope holds OpenBLAS at one thread."""
    return _depth > 0


@contextlib.contextmanager
def owned_threads():
    """Run the block with OpenBLAS at one thread and minivit's pool doing the parallel work.
    Scopes nest, also across threads: the first to open sets OpenBLAS to one thread, the last to
    close restores its count (even on error). A no-op with one minivit thread or no OpenBLAS to
    reach. Split products can round differently in the last bits from BLAS's own threading;
    for a given thread count they are the same from run to run."""
    global _depth, _saved
    from .parallel import num_threads  # noqa: PLC0415 - parallel imports this module
    with _lock:
        if not _depth:
            controls = openblas_controls() if num_threads() > 1 else []
            _saved = [(put, get()) for get, put in controls]
            for put, _ in _saved:
                put(1)
        opened = bool(_depth or _saved)     # False: nothing to own, the block runs as is
        _depth += opened
    try:
        yield
    finally:
        if opened:
            with _lock:
                _depth -= 1
                if not _depth:
                    for put, n in _saved:
                        put(n)


def owns_threads(fn):
    """Decorator: fn runs inside owned_threads()."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with owned_threads():
            return fn(*args, **kwargs)
    return wrapper
