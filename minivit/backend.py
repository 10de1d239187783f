"""One place decides the array module (NumPy on CPU, CuPy on a CUDA GPU).

Code elsewhere asks `get_array_module(*arrays)` (Chainer/CuPy style) or `xp()`, and never
imports cupy itself. Switch with `minivit.backend.use("cupy")` or `MINIVIT_BACKEND=cupy`.
"""
from __future__ import annotations

import os

import numpy

_name = "numpy"
_xp = numpy
_env_error = None       # MINIVIT_BACKEND named a backend that cannot run here: raised at first use


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (CuPy missing, or no CUDA device)."""


def _import_cupy():
    try:
        import cupy  # noqa: PLC0415 - the only place minivit imports cupy
    except ImportError as e:
        raise BackendUnavailable(
            "backend 'cupy' requested but CuPy is not installed: "
            "pip install 'minivit[cuda12]' (CUDA 12) or 'minivit[cuda13]' (CUDA 13), "
            "or use the numpy backend") from e
    try:
        ok = cupy.cuda.is_available()
    except Exception:  # noqa: BLE001 - driver errors surface in many forms
        ok = False
    if not ok:
        raise BackendUnavailable(
            "backend 'cupy' requested and CuPy is installed, but no CUDA device was found: "
            "run on a machine with an NVIDIA GPU and driver, or use the numpy backend")
    return cupy


def use(name: str):
    """Select the backend for new arrays: "numpy" or "cupy". Returns the array module."""
    global _name, _xp, _env_error
    if name == "numpy":
        _name, _xp = "numpy", numpy
    elif name == "cupy":
        _xp, _name = _import_cupy(), "cupy"
    else:
        raise ValueError(f"unknown backend {name!r}: expected 'numpy' or 'cupy'")
    _env_error = None
    return _xp


def check():
    """Raise the error of a MINIVIT_BACKEND that cannot run here (until use() picks another)."""
    if _env_error is not None:
        raise _env_error


def name() -> str:
    check()
    return _name


def xp():
    """The current backend's array module."""
    check()
    return _xp


def is_cupy_array(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def get_array_module(*arrays):
    """numpy or cupy, whichever the given arrays live in (numpy for host scalars)."""
    for a in arrays:
        if is_cupy_array(a):
            import cupy  # noqa: PLC0415 - arrays already are cupy, so it is importable
            return cupy
    return numpy


def to_numpy(a):
    """A host NumPy array of `a` (a no-op for NumPy arrays)."""
    return a.get() if is_cupy_array(a) else numpy.asarray(a)


def to_device(a, dtype=None):
    """`a` as an array of the current backend (copied to the GPU under CuPy)."""
    check()
    return _xp.asarray(a, dtype=dtype)


_constants = {}


def constant(key, make):
    """make(), made once per key (which holds the array module): index ranges, tables, grids
    and rates that code reuses step after step, so a GPU step neither launches kernels to
    rebuild them nor copies them from the host. Read-only: callers never write into them."""
    if key not in _constants:
        _constants[key] = make()
    return _constants[key]


def arange(xp, n, dtype=None, shift=0.0):
    """xp.arange(n) (+ shift), made once per (xp, n, dtype, shift): a read-only constant."""
    def make():
        r = xp.arange(n, dtype=dtype)
        return r + shift if shift else r
    return constant(("arange", xp, n, str(dtype), shift), make)


def default_rng(seed=None):
    """A seeded generator of the current backend (numpy/cupy .random.default_rng)."""
    check()
    return _xp.random.default_rng(seed)


def erf(x):
    """Elementwise erf in x's dtype: CuPy's on GPU; on NumPy a cheap float32 rational
    function for float32 (and float16, through float32) and W. J. Cody's (accurate to ~1e-16)
    for float64."""
    if is_cupy_array(x):
        import cupyx.scipy.special  # noqa: PLC0415
        return cupyx.scipy.special.erf(x)
    from .erf import erf_float32, erf_numpy  # noqa: PLC0415
    if x.dtype == numpy.float32:
        return erf_float32(x)
    if x.dtype == numpy.float16:                     # float16: evaluated in float32
        return erf_float32(x.astype(numpy.float32)).astype(numpy.float16)
    return erf_numpy(x)


def use_env(value):
    """use(value) for MINIVIT_BACKEND at import. A backend that cannot run here does not break
    `import minivit`: its error is kept, raised by the first name()/xp()/to_device()/
    default_rng(), and forgotten once use() picks a backend (e.g. --backend numpy)."""
    global _env_error
    try:
        use(value.strip().lower())
    except (BackendUnavailable, ValueError) as e:
        _env_error = type(e)(f"MINIVIT_BACKEND={value}: {e}")


if os.environ.get("MINIVIT_BACKEND"):
    use_env(os.environ["MINIVIT_BACKEND"])
