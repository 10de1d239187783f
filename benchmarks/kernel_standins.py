"""NumPy stand-ins for minivit.kernels_cupy's fused kernels, for benchmarks/op_counter.py: the
same outputs as the CUDA kernels, each counted as one launch (tests/test_count_ops.py checks
the CuPy path they complete against the NumPy path)."""
import numpy as np
from op_counter import Counted, _op, _plain, wrap


def _erf(x):
    from minivit.erf import erf_numpy  # noqa: PLC0415
    return erf_numpy(x.astype(np.float64)).astype(x.dtype)


def _gelu(x, out, cdf, bias):
    if bias is not None:
        x += bias                                  # kept in x, as the kernel does
    cdf[...] = 0.5 * (1 + _erf(x / 2 ** 0.5))
    out[...] = x * cdf


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


def _layernorm_dx(dy, xhat, gamma, rstd, dx, dgb=None, residual=None):   # dgb: since 94d73dc
    n = xhat.shape[-1]
    if dgb is not None:
        dgb[...] = np.concatenate([(dy * xhat).reshape(-1, n), dy.reshape(-1, n)], axis=1)
    g = dy * gamma
    dx[...] = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    if residual is not None:
        dx += residual


def _xent_rows(logits, t, smooth, dlogits, row_loss):
    t = t * (1 - smooth) + smooth / t.shape[1]
    s = logits - logits.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    B = logits.shape[0]
    row_loss[...] = -(t * logp).sum(axis=1) / B
    dlogits[...] = (np.exp(logp) - t) / B


# NumPy stand-ins for minivit.kernels_cupy's fused kernels: the same outputs, one launch each.
FUSED = {
    "gelu_forward": lambda x, out, cdf, bias=None: _gelu(x, out, cdf, bias),
    "gelu_backward": lambda dy, x, cdf, out: out.__setitem__(
        ..., dy * (cdf + x * 0.3989422804014327 * np.exp(-0.5 * x * x))),
    "bias_residual": lambda y, b, r, out: out.__setitem__(..., y + b + r),
    "masked_residual": lambda x, m, r, out: out.__setitem__(..., r + x * m),
    "masked_bias_residual": lambda x, b, m, r, out: out.__setitem__(..., r + (x + b) * m),
    "adamw_update": _adamw,
    "softmax_forward": _softmax,
    "softmax_backward": lambda dA, A, scale, out: out.__setitem__(
        ..., scale * A * (dA - (dA * A).sum(-1, keepdims=True))),
    "layernorm_forward": _layernorm,
    "layernorm_backward_dx": _layernorm_dx,
    "cross_entropy_rows": _xent_rows,
}
_RETURNS = {"gelu_forward": (1, 2), "gelu_backward": 3, "bias_residual": 3, "softmax_forward": 2,
            "masked_residual": 3, "masked_bias_residual": 4,
            "softmax_backward": 3, "layernorm_forward": (4, 5, 6),
            "layernorm_backward_dx": lambda args: args[4] if len(args) == 5 else args[4:6]}


def _fused(name, fn):
    def launch(*args):
        if fn is None:                                                # col_sums(a)
            with _op(f"fused.{name}"):
                return wrap(_plain(args[0]).sum(axis=0))
        with _op(f"fused.{name}"):
            fn(*_plain(args))
        r = _RETURNS.get(name)
        if callable(r):
            return r(args)
        return None if r is None else args[r] if isinstance(r, int) else tuple(args[i] for i in r)
    return launch


def _sum_of_squares(arrays):
    with _op("concatenate", len(arrays) == 1):
        flat = np.concatenate([a.ravel() for a in _plain(arrays)])
    with _op("fused.sum_of_squares"):
        return wrap(np.asarray((flat.astype(np.float64) ** 2).sum()))


class Replay:
    """A generator that gives back recorded draws in order (the shape asked for checked)."""

    def __init__(self, draws):
        self.draws = list(draws)

    def _next(self, *args, size=None, **kwargs):
        a = self.draws.pop(0)
        size = args[-1] if size is None and args else size
        assert a.shape == ((size,) if isinstance(size, int) else tuple(size)), (a.shape, size)
        return a

    def random(self, size=None, dtype=None):
        return self._next(size=size)

    integers = beta = standard_normal = _next


class Recording:
    """A generator that records (plain copies of) the draws it passes on."""

    def __init__(self, rng):
        self.rng, self.draws = rng, []

    def __getattr__(self, name):
        def draw(*args, **kwargs):
            a = getattr(self.rng, name)(*args, **kwargs)
            self.draws.append(np.array(_plain(a)))
            return a
        return draw


def _augment_train_batch(fused_train_batch):
    """augment_fused.train_batch as counted: the wrapper itself runs (its draws, stacks and the
    two launches, each kernel a counted no-op); the values are the plain pipeline's halves
    (minivit.data.loader) replaying the same draws (not counted: NumPy arrays)."""
    from minivit.data import loader  # noqa: PLC0415

    def train_batch(images_u8, labels, rng, aug, num_classes, dtype):
        rec = Recording(rng)
        x, targets = fused_train_batch(images_u8, labels, rec, aug, num_classes, dtype)
        replay = Replay(rec.draws)
        half = loader.augment_images(_plain(images_u8), replay, aug, dtype)
        xs, ts = loader.mix_normalize_erase(half, _plain(labels), replay, aug, num_classes)
        assert not replay.draws, "the fused path drew more than the plain one"
        _plain(x)[...] = xs
        if targets is not labels:
            _plain(targets)[...] = ts
        return x, targets
    return train_batch


def _augment_kernel(name, dtype):
    def launch(grid, block, args):
        with _op(f"fused.{name}"):
            pass
    return launch


def _direct_gemm(p, a, b, out):
    """minivit.batched_gemm's cuBLAS call: one launch, no operand copies."""
    with _op("matmul"):
        np.matmul(_plain(a), _plain(b), out=_plain(out))
    return out


def gemm_patches():
    try:
        from minivit import batched_gemm  # noqa: PLC0415
    except ImportError:                                               # older trees
        return []
    return [(batched_gemm, "_launch", _direct_gemm)]


def augment_patches():
    try:
        from minivit.data import augment_fused as f  # noqa: PLC0415
    except ImportError:                                               # older trees
        return []
    return [(f, "enabled", lambda u8, dtype: isinstance(u8, Counted) and u8.dtype.char == "B"),
            (f, "_cp", lambda: __import__("op_counter").XP), (f, "_kernel", _augment_kernel),
            (f, "train_batch", _augment_train_batch(f.train_batch))]


def kernel_patches():
    import minivit.kernels_cupy as k  # noqa: PLC0415
    patches = {name: _fused(name, fn) for name, fn in FUSED.items()}
    patches["sum_of_squares"] = _sum_of_squares
    patches["enabled"] = lambda a: isinstance(a, Counted) and a.dtype.char in "efd"
    patches["unit_affine"] = lambda n, dtype: (wrap(np.ones(n, dtype)), wrap(np.zeros(n, dtype)))
    patches["col_sums"] = _fused("col_sums", None)                    # older code's GEMV
    return [(k, name, fn) for name, fn in patches.items() if hasattr(k, name)] + \
        augment_patches() + gemm_patches()
