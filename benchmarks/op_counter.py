"""Arrays that count the operations run on them: on CuPy, about one kernel launch each.

- every ufunc call (operators included), every NumPy function that makes or fills an array,
  advanced indexing, item assignment, astype, copy and the C methods (argmax, take, ...) count
  one; views (reshape, transpose, basic slicing, broadcast_to) count none, as they launch
  nothing on CuPy either; allocations (empty) are counted apart, as they launch nothing;
- an operation counts once, however many it runs inside (a depth counter);
- every draw of a random generator counts one.

Counted is an ndarray subclass that counts through NumPy's __array_ufunc__ /
__array_function__ hooks. Inside `counting()`, minivit's get_array_module answers XP, a
stand-in for `numpy` named "cupy", so minivit's layers take their CuPy path, and the fused
kernels of minivit.kernels_cupy are NumPy stand-ins that count one launch each
(benchmarks/kernel_standins.py; the same outputs: tests/test_count_ops.py checks the path
against the NumPy one). A matmul also counts
the copies CuPy makes of operands and outputs cuBLAS cannot take as they are (_matmul_copies).
CuPy runs a few other operations as more than one kernel (pad, einsum, concatenate): the counts
are a lower bound. Used by benchmarks/count_ops.py.
"""
import contextlib
import sys
import types
from collections import Counter

import numpy as np

FREE = {"reshape", "transpose", "swapaxes", "moveaxis", "squeeze", "expand_dims", "broadcast_to",
        "broadcast_arrays", "shape", "ndim", "size", "result_type", "may_share_memory",
        "shares_memory", "iscomplexobj", "isscalar", "atleast_1d", "atleast_2d", "atleast_3d"}
_depth = [0]
counts = Counter()
_phase = ["other"]


@contextlib.contextmanager
def phase(name):
    """Attribute what runs inside to `name`."""
    old, _phase[0] = _phase[0], name
    try:
        yield
    finally:
        _phase[0] = old


ALLOC = {"empty", "empty_like"}    # memory from CuPy's pool: no kernel


@contextlib.contextmanager
def _op(name, free=False):
    if _depth[0] == 0 and not free:
        counts[(_phase[0], name)] += 1
        counts[_phase[0] if name not in ALLOC else ("alloc", _phase[0])] += 1
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1


def wrap(obj):
    """Counted views of arrays (and of NumPy scalars, which are 0-d arrays on CuPy)."""
    if isinstance(obj, np.ndarray) and not isinstance(obj, Counted):
        return obj.view(Counted)
    if isinstance(obj, np.generic):
        return np.asarray(obj).view(Counted)
    if isinstance(obj, tuple):
        return tuple(wrap(o) for o in obj)
    if isinstance(obj, list):
        return [wrap(o) for o in obj]
    return obj


def _plain(obj):
    if isinstance(obj, Counted):
        return obj.view(np.ndarray)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_plain(o) for o in obj)
    return obj


def _advanced(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, (np.ndarray, list)) for i in items)


def _matmul_copies(a, b, out=None):
    """The copies CuPy's matmul makes around its cuBLAS call (cupy/_core/_routines_linalg.pyx,
    CuPy 14): a batched product (3-D or more) makes each operand C-contiguous; a 2-D one takes
    C- or F-contiguous operands as they are and copies others; an `out` that is not
    C-contiguous (or, batched, overlaps an operand) gets the result through a temporary."""
    out = out[0] if isinstance(out, tuple) else out
    names = []
    batched = max(np.ndim(a), np.ndim(b)) > 2
    for x in (a, b):
        if np.ndim(x) >= 2 and not x.flags.c_contiguous and (batched or not x.flags.f_contiguous):
            names.append("matmul.copy_operand")
    if out is not None and (not out.flags.c_contiguous or batched and any(
            np.may_share_memory(_plain(out), _plain(x)) for x in (a, b))):
        names.append("matmul.copy_out")
    return names


def _contiguous_already(a, dtype=None):
    """CuPy's ascontiguousarray returns a C-contiguous array of its dtype as it is: no kernel."""
    return isinstance(a, np.ndarray) and a.flags.c_contiguous and (
        dtype is None or np.dtype(dtype) == a.dtype)


def _count_matmul_copies(a, b, out=None):
    if _depth[0] == 0:
        for name in _matmul_copies(a, b, out):
            with _op(name):
                pass


class Counted(np.ndarray):
    """An ndarray whose operations are counted (see the module docstring)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc is np.matmul and method == "__call__":
            _count_matmul_copies(*inputs, kwargs.get("out"))
        if "out" in kwargs:
            kwargs["out"] = _plain(kwargs["out"])
        with _op(f"{ufunc.__name__}.{method}" if method != "__call__" else ufunc.__name__):
            out = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        return wrap(out)

    def __array_function__(self, func, types_, args, kwargs):
        with _op(func.__name__, func.__name__ in FREE):
            out = func(*_plain(args), **_plain(kwargs))
        return wrap(out)

    def get(self):                                # cupy.ndarray.get(): the host copy
        return np.array(self.view(np.ndarray))

    def __getitem__(self, index):
        with _op("getitem[advanced]", not _advanced(index)):
            out = np.ndarray.__getitem__(self.view(np.ndarray), _plain(index))
        return wrap(out)

    def __setitem__(self, index, value):
        with _op("setitem"):
            np.ndarray.__setitem__(self.view(np.ndarray), _plain(index), _plain(value))

    def astype(self, dtype, *args, **kwargs):
        same = np.dtype(dtype) == self.dtype and kwargs.get("copy", True) is False
        with _op("astype", same):
            return wrap(self.view(np.ndarray).astype(dtype, *args, **kwargs))

    def _method(name):                       # one reduction kernel on CuPy, several in NumPy
        def call(self, *args, **kwargs):
            with _op(name):
                return wrap(getattr(np.ndarray, name)(self.view(np.ndarray), *_plain(args),
                                                      **_plain(kwargs)))
        return call

    mean, var, std = _method("mean"), _method("var"), _method("std")
    # C methods that reach neither hook (one kernel each on CuPy)
    argmax, argmin, take = _method("argmax"), _method("argmin"), _method("take")
    sort, argsort, nonzero = _method("sort"), _method("argsort"), _method("nonzero")
    repeat, dot, fill = _method("repeat"), _method("dot"), _method("fill")

    def copy(self, *args, **kwargs):
        with _op("copy"):
            return wrap(self.view(np.ndarray).copy(*args, **kwargs))


class CountingRNG:
    """A NumPy Generator whose draws count one each and come back Counted."""

    def __init__(self, rng):
        self._rng = rng

    def __getattr__(self, name):
        attr = getattr(self._rng, name)
        if not callable(attr):
            return attr

        def draw(*args, **kwargs):
            with _op(f"rng.{name}"):
                return wrap(attr(*_plain(args), **_plain(kwargs)))
        return draw


def _counting_module():
    """A stand-in for `numpy`: its functions count and return Counted arrays."""
    mod = types.ModuleType("numpy")

    def counted(name, fn):
        def call(*args, **kwargs):
            if name == "matmul":
                _count_matmul_copies(*args[:2], kwargs.get("out"))
            with _op(name, name in FREE or name in ("dtype", "finfo", "errstate")
                     or name == "ascontiguousarray" and _contiguous_already(*args, **kwargs)):
                return wrap(fn(*_plain(args), **_plain(kwargs)))
        return call

    class Module(types.ModuleType):
        def __getattr__(self, name):
            attr = getattr(np, name)
            if callable(attr) and not isinstance(attr, type) and not name.startswith("_"):
                return counted(name, attr)
            return attr

    mod.__class__ = Module
    mod.random = types.SimpleNamespace(default_rng=lambda seed=None: CountingRNG(
        np.random.default_rng(seed)))
    mod.__name__ = "numpy"
    return mod


XP = _counting_module()
XP.__name__ = "cupy"              # minivit's layers take their CuPy path for Counted arrays


@contextlib.contextmanager
def counting():
    """While inside: minivit's get_array_module answers the counting stand-in for Counted
    arrays, and backend.default_rng gives counting generators."""
    from minivit import backend  # noqa: PLC0415

    def gam(*arrays):
        return XP if any(isinstance(a, Counted) for a in arrays) else backend_gam(*arrays)

    backend_gam = backend.get_array_module
    patched = [(m, "get_array_module") for m in list(sys.modules.values())
               if getattr(m, "__name__", "").startswith("minivit")
               and getattr(m, "get_array_module", None) is backend_gam]
    patched = [(m, a, gam) for m, a in patched]
    patched.append((backend, "default_rng", lambda seed=None: CountingRNG(
        np.random.default_rng(seed))))
    from kernel_standins import kernel_patches  # noqa: PLC0415 - it imports this module
    patched += kernel_patches()
    saved = [getattr(m, a) for m, a, _ in patched]
    for m, a, fn in patched:
        setattr(m, a, fn)
    try:
        yield
    finally:
        for (m, a, _), v in zip(patched, saved, strict=True):
            setattr(m, a, v)


@contextlib.contextmanager
def fake_cupy():
    """counting(), and minivit.backend itself set to the stand-in as if backend.use("cupy")
    had run: to_device gives Counted arrays, to_numpy copies them back, backend.name() says
    "cupy". A whole training run (minivit.runner.Run) then takes every CuPy path on the CPU
    (tests/test_cupy_dry_run.py), which is how code that only a GPU would run gets run in CI."""
    from minivit import backend  # noqa: PLC0415
    saved = (backend._name, backend._xp, backend._env_error, backend.is_cupy_array, backend.use)

    def use(name):                                # backend.use, with the stand-in for "cupy"
        if name != "cupy":
            return saved[4](name)
        backend._name, backend._xp, backend._env_error = "cupy", XP, None
        return XP

    with counting():
        backend.use, backend.is_cupy_array = use, lambda a: isinstance(a, Counted)
        use("cupy")
        try:
            yield
        finally:
            (backend._name, backend._xp, backend._env_error, backend.is_cupy_array,
             backend.use) = saved
