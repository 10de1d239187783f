"""Count the array operations one training step issues: on CuPy, about one kernel launch each.

On the GPU the step is bound by the host issuing CuPy's kernels from Python (BENCHMARKS.md,
"GPU (CuPy)": ~10-40 us each), so the number of operations a step issues is what sets its
time there. This counts them on NumPy, where no GPU is needed:

- every ufunc call (operators included), every NumPy function that makes or fills an array,
  advanced indexing, item assignment, astype and copy count one; views (reshape, transpose,
  basic slicing, broadcast_to) count none, as they launch nothing on CuPy either;
- an operation counts once, however many it runs inside (a depth counter);
- every draw of a random generator counts one.

Arrays are an ndarray subclass that counts through NumPy's __array_ufunc__ /
__array_function__ hooks; minivit's modules get a counting stand-in for `numpy` from
get_array_module while counting. The counts are of the NumPy code path: on CuPy the fused
kernels (GELU, softmax, LayerNorm, bias+residual, AdamW, the clipping norm) run several of these
operations as one launch, so the model's counts are an upper bound there; the augmentation has
no fused kernels, so its counts are CuPy's.

    python benchmarks/count_ops.py [--batch 512] [--recipe full]
"""
import argparse
import contextlib
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


class Counted(np.ndarray):
    """An ndarray whose operations are counted (see the module docstring)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = _plain(kwargs["out"])
        with _op(f"{ufunc.__name__}.{method}" if method != "__call__" else ufunc.__name__):
            out = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        return wrap(out)

    def __array_function__(self, func, types_, args, kwargs):
        with _op(func.__name__, func.__name__ in FREE):
            out = func(*_plain(args), **_plain(kwargs))
        return wrap(out)

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
            with _op(name, name in FREE or name in ("dtype", "finfo", "errstate")):
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


def _erf(x):
    from minivit.erf import erf_numpy  # noqa: PLC0415
    return erf_numpy(x.astype(np.float64)).astype(x.dtype)


def _row_stats(x, eps):
    mu = x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + eps)
    return (x - mu) * rstd, rstd


def _adamw(p, g, m, v, lr, b1, b2, eps, decay, c1, c2, gs=1.0):
    g = g * gs
    m[...] = b1 * m + (1 - b1) * g
    v[...] = b2 * v + (1 - b2) * g * g
    p[...] = p * (1 - decay) - (lr / c1) * m / (np.sqrt(v / c2) + eps)


def _softmax(s, scale, out):
    e = np.exp(scale * (s - s.max(axis=-1, keepdims=True)))
    out[...] = e / e.sum(axis=-1, keepdims=True)


def _layernorm(x, gamma, beta, eps, y, xhat, rstd):
    xhat[...], rstd[...] = _row_stats(x, eps)
    y[...] = gamma * xhat + beta


def _layernorm_dx(dy, xhat, gamma, rstd, dx):
    g = dy * gamma
    dx[...] = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))


# NumPy stand-ins for minivit.kernels_cupy's fused kernels: the same outputs, one launch each.
FUSED = {
    "gelu_forward": lambda x, out, cdf: (cdf.__setitem__(..., 0.5 * (1 + _erf(x / 2 ** 0.5))),
                                         out.__setitem__(..., x * cdf)),
    "gelu_backward": lambda dy, x, cdf, out: out.__setitem__(
        ..., dy * (cdf + x * 0.3989422804014327 * np.exp(-0.5 * x * x))),
    "bias_residual": lambda y, b, r, out: out.__setitem__(..., y + b + r),
    "adamw_update": _adamw,
    "softmax_forward": _softmax,
    "softmax_backward": lambda dA, A, scale, out: out.__setitem__(
        ..., scale * A * (dA - (dA * A).sum(-1, keepdims=True))),
    "layernorm_forward": _layernorm,
    "layernorm_backward_dx": _layernorm_dx,
}
_RETURNS = {"gelu_forward": (1, 2), "gelu_backward": 3, "bias_residual": 3, "softmax_forward": 2,
            "softmax_backward": 3, "layernorm_forward": (4, 5, 6), "layernorm_backward_dx": 4}


def _fused(name, fn):
    def launch(*args):
        if fn is None:                                                # col_sums(a)
            with _op(f"fused.{name}"):
                return wrap(_plain(args[0]).sum(axis=0))
        with _op(f"fused.{name}"):
            fn(*_plain(args))
        r = _RETURNS.get(name)
        return None if r is None else args[r] if isinstance(r, int) else tuple(args[i] for i in r)
    return launch


def _sum_of_squares(arrays):
    with _op("concatenate", len(arrays) == 1):
        flat = np.concatenate([a.ravel() for a in _plain(arrays)])
    with _op("fused.sum_of_squares"):
        return wrap(np.asarray((flat.astype(np.float64) ** 2).sum()))


def _kernel_patches():
    import minivit.kernels_cupy as k  # noqa: PLC0415
    patches = {name: _fused(name, fn) for name, fn in FUSED.items()}
    patches["sum_of_squares"] = _sum_of_squares
    patches["enabled"] = lambda a: isinstance(a, Counted) and a.dtype.char in "fd"
    patches["unit_affine"] = lambda n, dtype: (wrap(np.ones(n, dtype)), wrap(np.zeros(n, dtype)))
    patches["col_sums"] = _fused("col_sums", None)                    # older code's GEMV
    return [(k, name, fn) for name, fn in patches.items() if hasattr(k, name)]


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
    patched += _kernel_patches()
    saved = [getattr(m, a) for m, a, _ in patched]
    for m, a, fn in patched:
        setattr(m, a, fn)
    try:
        yield
    finally:
        for (m, a, _), v in zip(patched, saved, strict=True):
            setattr(m, a, v)


def one_step(recipe, batch, seed=0):
    """Run one training step of `recipe` (the runner's order: gather, augment, forward, loss,
    backward, clip + AdamW) on Counted arrays, by phase; returns the Counter."""
    from minivit import optim, parallel  # noqa: PLC0415
    from minivit.config import ViTConfig  # noqa: PLC0415
    from minivit.data.loader import train_batch  # noqa: PLC0415
    from minivit.layers.loss import cross_entropy  # noqa: PLC0415
    from minivit.models import get_model  # noqa: PLC0415
    from minivit.recipes import recipe as get_recipe  # noqa: PLC0415
    from minivit.train import build_model  # noqa: PLC0415
    from minivit.workspace import Workspace  # noqa: PLC0415

    model_overrides, tc = get_recipe(recipe)
    cfg = ViTConfig(**model_overrides)
    spec = get_model("vit")
    data = np.random.default_rng(seed)
    images = wrap(data.integers(0, 256, (4 * batch, 3, 32, 32), dtype=np.uint8))
    labels = wrap(data.integers(0, 10, 4 * batch))
    params = {k: wrap(v) for k, v in build_model(cfg, seed, "float32").items()}
    opt = optim.adamw_init(params)
    opt["m"] = {k: wrap(v) for k, v in opt["m"].items()}
    opt["v"] = {k: wrap(v) for k, v in opt["v"].items()}
    ws = Workspace()

    def step():
        from minivit import backend  # noqa: PLC0415
        rng = backend.default_rng(seed)
        with phase("gather"):
            idx = wrap(np.arange(batch))
            xb, yb = images[idx], labels[idx]
        with phase("augment"):
            x, targets = train_batch(xb, yb, rng, tc.augment, 10, "float32")
        with phase("forward"):
            logits, cache = spec.forward(params, x, cfg, True, rng, None, workspace=ws)
        with phase("loss"):
            loss, dlogits = cross_entropy(logits, targets, tc.label_smoothing)
            y = targets if targets.ndim == 1 else targets.argmax(axis=1)   # as train_step
            read = XP.stack([XP.asarray(loss, "float64"),
                             (logits.argmax(axis=1) == y).sum().astype("float64")])
            float(read[0])
        with phase("backward"):
            _, grads = spec.backward(dlogits, cache, input_grad=False)
        with phase("optimizer"):
            if hasattr(optim, "pack_adamw"):
                optim.adamw_step(params, grads, opt, 1e-3, weight_decay=tc.weight_decay,
                                 clip_norm=tc.clip_norm or None)
            else:                                # the older code: train_step's call then
                scale = optim.clip_scale(grads, tc.clip_norm)[0]
                optim.adamw_step(params, grads, opt, 1e-3, weight_decay=tc.weight_decay,
                                 grad_scale=scale)

    with counting():
        if hasattr(optim, "pack_adamw"):        # as the runner does (CuPy only; the code
            optim.pack_adamw(params, opt)        # before 2026-11-23 has no packing)
        parallel._run_inline(step)               # warm-up: the workspace's buffers are made
        counts.clear()
        parallel._run_inline(step)
    return Counter(counts)


PHASES = ("gather", "augment", "forward", "loss", "backward", "optimizer")


def report(c, top=0):
    print("| phase | operations (launches) | allocations (no launch) |\n| --- | ---: | ---: |")
    for p in PHASES:
        print(f"| {p} | {c[p]} | {c[('alloc', p)]} |")
    print(f"| **step** | **{sum(c[p] for p in PHASES)}** | "
          f"{sum(c[('alloc', p)] for p in PHASES)} |")
    for p in PHASES[:top and None]:
        if top:
            ops = sorted(((n, k[1]) for k, n in c.items() if isinstance(k, tuple) and k[0] == p
                          and k[1] not in ALLOC), reverse=True)[:top]
            print(f"\n{p}: " + ", ".join(f"{name} {n}" for n, name in ops))


def time_augment(recipe, batch, repeats=7):
    """Median seconds of the recipe's augmentation (train_batch) of one batch on plain NumPy."""
    import time  # noqa: PLC0415

    from minivit.backend import default_rng  # noqa: PLC0415
    from minivit.data.loader import train_batch  # noqa: PLC0415
    from minivit.recipes import recipe as get_recipe  # noqa: PLC0415
    tc = get_recipe(recipe)[1]
    data = np.random.default_rng(0)
    images = data.integers(0, 256, (batch, 3, 32, 32), dtype=np.uint8)
    labels = data.integers(0, 10, batch)
    times = []
    for r in range(repeats + 1):
        t = time.perf_counter()
        train_batch(images, labels, default_rng(r), tc.augment, 10, "float32")
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from minivit.recipes import RECIPES  # noqa: PLC0415
    ap.add_argument("--recipe", default="full", choices=list(RECIPES),
                    help="the recipe whose augmentation, model and optimizer run (default: full, "
                    "the GPU recipe)")
    ap.add_argument("--batch", type=int, default=64, help="batch size, >= 2 (the counts do not "
                    "depend on it; --time-augment's time does)")
    ap.add_argument("--top", type=int, default=0, help="list the N commonest operations of "
                    "each phase")
    ap.add_argument("--time-augment", action="store_true", help="also time the augmentation "
                    "of one batch on NumPy (median of 7)")
    args = ap.parse_args(argv)
    if args.batch < 2:
        ap.error("--batch must be at least 2 (mixup pairs the batch with itself reversed)")
    c = one_step(args.recipe, args.batch)
    print(f"operations of one `{args.recipe}` training step, batch {args.batch} "
          f"(`python benchmarks/count_ops.py {' '.join(argv or sys.argv[1:])}`):\n")
    report(c, args.top)
    if args.time_augment:
        print(f"\naugmentation of one batch of {args.batch} on NumPy: "
              f"{time_augment(args.recipe, args.batch) * 1e3:.1f} ms (median of 7)")
    return c


if __name__ == "__main__":
    main()
