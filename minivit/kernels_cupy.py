"""Fused CUDA kernels for the CuPy backend: one pass over memory where the plain `xp` code
(the same layer functions, run on CuPy arrays) launches one kernel per operation.

Each kernel computes exactly the formula of the plain version beside it in minivit/layers/
and is tested against it (tests/test_kernels_cupy.py; skipped without a CUDA device; run on an
H100 on 2026-11-22 and 2026-11-23, BENCHMARKS.md). Every kernel also runs on the CPU, checked
there without a GPU (tests/test_kernels_cpu.py): the element-wise and reduction bodies
compiled with g++, the row kernels' CUDA source with each warp emulated by 32 threads.
MINIVIT_FUSED=0 turns them off.

    gelu (exact):  y = x Phi(x), Phi = (1 + erf(x / sqrt 2)) / 2;  dx = dy (Phi + x phi(x))
    softmax:       A = exp(scale (s - max s)) / sum;   dS = scale A (dA - sum dA A)
    LayerNorm:     y = gamma xhat + beta;   dx = rstd (g - mean g - xhat mean(g xhat)) [+ res],
                   and the rows' [dy xhat | dy], whose column sums are dgamma and dbeta
    cross-entropy: t' = (1 - eps) t + eps / K;  loss_b = -sum t' log softmax;  dz = (p - t') / B
    bias+residual: out = y + b + r;  with a drop-path mask m: out = r + (y + b) m
    AdamW:         m, v moments, bias-corrected step, decoupled decay (minivit.optim's update),
                   the gradient-clipping scale folded in
    (column sums, ones @ a, are one cuBLAS GEMV: minivit.parallel.col_sums)
    sum of squares: every gradient's, in float64, in one reduction (the clipping norm)
The step on a GPU is bound by the host launching kernels (benchmarks/profile_gpu.py): fewer,
larger kernels are what pays.
"""
import os

from .kernels_rows import _NAMES, ROWS_SRC, TYPES  # the row kernels' CUDA text

_cache = {}


def enabled(a) -> bool:
    """True for a float16/float32/float64 CuPy array when fused kernels are on
    (MINIVIT_FUSED != "0"). float16 (mixed precision's activations, minivit/precision.py) is
    stored as half and computed in float32 by every kernel that takes it; AdamW, the sum of
    squares and cross-entropy only ever see float32 there (master weights, float32 loss)."""
    return type(a).__module__.split(".")[0] == "cupy" and os.environ.get("MINIVIT_FUSED") != "0" \
        and a.dtype.char in "efd"


def _cp():
    import cupy  # noqa: PLC0415 - only reached with CuPy arrays
    return cupy


# name -> (inputs, outputs, body) of each ElementwiseKernel. The bodies are plain C++ over one
# element, computed in C (PREAMBLE: T, or float for float16); tests/cpu_kernels.py compiles
# them for the CPU too, so CI checks them without a GPU.
PREAMBLE = ("template<typename T> struct Acc { typedef T type; };\n"
            "template<> struct Acc<float16> { typedef float type; };\n")
_C = "typedef Acc<T>::type C; "
_GELU = ("C xv = (C)x, c = (C)0.5 * ((C)1 + erf(xv * (C)0.70710678118654752)); "
         "cdf = (T)c; y = (T)(xv * c);")
ELEMENTWISE = {
    "gelu_fwd": ("T x", "T y, T cdf", _C + _GELU),
    "gelu_bias_fwd": ("T b", "T x, T y, T cdf", _C + "x = (T)((C)x + (C)b); " + _GELU),  # kept
    "gelu_bwd": ("T dy, T x, T cdf", "T dx", _C + "C xv = (C)x; dx = (T)((C)dy * ((C)cdf + "
                 "xv * (C)0.39894228040143268 * exp((C)-0.5 * xv * xv)));"),
    "bias_res": ("T y, T b, T r", "T out", _C + "out = (T)((C)y + (C)b + (C)r);"),
    "masked_res": ("T x, T m, T r", "T out",
                   _C + "out = (T)((C)r + (C)x * (C)m);"),             # drop-path + residual
    "masked_bias_res": ("T x, T b, T m, T r", "T out",
                        _C + "out = (T)((C)r + ((C)x + (C)b) * (C)m);"),  # + the bias
    "adamw": ("T g0, T gs, float64 lr, float64 b1, float64 b2, float64 eps, float64 decay, "
              "float64 c1, float64 c2", "T p, T m, T v",
              "T g = g0 * gs; m = (T)b1 * m + (T)(1 - b1) * g; v = (T)b2 * v + (T)(1 - b2) * g * g;"
              "p = p * (T)(1 - decay) - (T)(lr / c1) * m / (sqrt(v / (T)c2) + (T)eps);"),
}
# ReductionKernel: (input, output, map, reduce, post-map, identity)
SUMSQ = ("T x", "float64 y", "(double)x * (double)x", "a + b", "y = a", "0")


def _elementwise(name):
    if name not in _cache:
        _cache[name] = _cp().ElementwiseKernel(*ELEMENTWISE[name], "minivit_" + name,
                                               preamble=PREAMBLE)
    return _cache[name]


def gelu_forward(x, out, cdf_out, bias=None):
    """GELU(x) into out, Phi(x) into cdf_out; with bias (broadcast over the rows): x + bias
    first, left in x (the linear layer's bias, added in the same pass)."""
    if bias is None:
        _elementwise("gelu_fwd")(x, out, cdf_out)
    else:
        _elementwise("gelu_bias_fwd")(bias, x, out, cdf_out)
    return out, cdf_out


def gelu_backward(dy, x, cdf, out):
    _elementwise("gelu_bwd")(dy, x, cdf, out)
    return out


def sum_of_squares(arrays):
    """sum of every squared element of `arrays`, accumulated in float64, as a 0-d array: the
    arrays are joined into one vector (one copy kernel) and reduced by one kernel."""
    cp = _cp()
    if "sumsq" not in _cache:
        _cache["sumsq"] = cp.ReductionKernel(*SUMSQ, "minivit_sumsq")
    flat = arrays[0].ravel() if len(arrays) == 1 else cp.concatenate([a.ravel() for a in arrays])
    return _cache["sumsq"](flat)


def bias_residual(y, b, r, out):
    """out = y + b + r (b broadcast over the rows): the bias of a linear and a residual add."""
    _elementwise("bias_res")(y, b, r, out)
    return out


def masked_bias_residual(x, b, m, r, out):
    """out = r + (x + b) m: masked_residual of a linear layer's x W whose bias b (broadcast over
    the rows) was left for this pass (linear_forward's defer_bias)."""
    _elementwise("masked_bias_res")(x, b, m, r, out)
    return out


def masked_residual(x, m, r, out):
    """out = r + x m (m broadcast, e.g. a (B, 1, 1) drop-path mask): a residual add of a
    stochastic-depth branch, with no x m array."""
    _elementwise("masked_res")(x, m, r, out)
    return out


def adamw_update(p, g, m, v, lr, b1, b2, eps, decay, c1, c2, gs=1.0):
    """In place, with g = g gs (gs: the clipping scale, a 0-d array or 1):
    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr decay p (decay: lr*wd folded by the
    caller as `decay`) + (lr / c1) m / (sqrt(v / c2) + eps)."""
    _elementwise("adamw")(g, gs, lr, b1, b2, eps, decay, c1, c2, p, m, v)
    return p


def compiled(source, names, name, dtype, options=()):
    """The kernel `name<T>` (T = dtype) of CUDA `source`, whose template instances are `names`
    (compiled once per source), called as kernel(grid, block, args)."""
    t = TYPES[str(dtype)]
    key = (source, name, t)
    if key not in _cache:
        if source not in _cache:
            _cache[source] = _cp().RawModule(code=source, options=("-std=c++14", *options),
                                             name_expressions=names)
        _cache[key] = _cache[source].get_function(f"{name}<{t}>")
    return _cache[key]


def _row_kernel(name, dtype):
    return compiled(ROWS_SRC, _NAMES, name, dtype)


def row_grid(rows):
    """(blocks, threads) of a row kernel: a warp of 32 threads per row, 8 rows a block."""
    threads = 256
    return (rows * 32 + threads - 1) // threads, threads


def _contig(*arrays):
    """The row kernels take raw T pointers: every array C-contiguous, of the first's dtype."""
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError("fused row kernels need C-contiguous arrays")
        if a.dtype != arrays[0].dtype:
            raise ValueError(f"fused row kernels need one dtype, got {a.dtype} and "
                             f"{arrays[0].dtype}")


def softmax_forward(s, scale, out):
    cp = _cp()
    _contig(s, out)
    n = s.shape[-1]
    _launch_scaled("softmax_fwd", s.size // n, n, (s, out), s.dtype, scale, cp)
    return out


def softmax_backward(dA, A, scale, out):
    cp = _cp()
    _contig(dA, A, out)
    n = A.shape[-1]
    _launch_scaled("softmax_bwd", A.size // n, n, (dA, A, out), A.dtype, scale, cp)
    return out


def _launch_scaled(name, rows, n, arrays, dtype, scalar, cp):
    """Kernels whose last argument is a T scalar after (rows, n)."""
    blocks, threads = row_grid(rows)
    sc = (cp.float32 if cp.dtype(dtype).char == "e" else cp.dtype(dtype).type)(scalar)  # C
    _row_kernel(name, dtype)((blocks,), (threads,), arrays + (cp.int64(rows), cp.int32(n), sc))


def layernorm_forward(x, gamma, beta, eps, y, xhat, rstd):
    cp = _cp()
    _contig(x, gamma, beta, y, xhat, rstd)
    n = x.shape[-1]
    _launch_scaled("layernorm_fwd", x.size // n, n, (x, gamma, beta, y, xhat, rstd), x.dtype,
                   eps, cp)
    return y, xhat, rstd


def unit_affine(n, dtype):
    """(ones(n), zeros(n)) on the device, cached: gamma and beta of a LayerNorm without affine
    for the kernels above (minivit.layers.layernorm)."""
    cp = _cp()
    key = ("unit_affine", n, cp.dtype(dtype).str)
    if key not in _cache:
        _cache[key] = (cp.ones(n, dtype), cp.zeros(n, dtype))
    return _cache[key]


def layernorm_backward_dx(dy, xhat, gamma, rstd, dx, dgb=None, residual=None):
    """dx (+ residual, dx's shape, when given), and, when given, dgb (rows, 2n) = [dy xhat | dy]
    row by row: one column sum of dgb then gives dgamma and dbeta together
    (minivit.layers.layernorm). dx may be dy; residual must not be dx."""
    cp = _cp()
    res = dx if residual is None else residual                # not read without a residual
    gb = dx if dgb is None else dgb                           # not written without dgb
    _contig(dy, xhat, gamma, rstd, dx, gb, res)
    n = xhat.shape[-1]
    rows = xhat.size // n
    blocks, threads = row_grid(rows)
    _row_kernel("layernorm_bwd", xhat.dtype)(
        (blocks,), (threads,), (dy, xhat, gamma, rstd, dx, gb, res, cp.int64(rows), cp.int32(n),
                                cp.int32(residual is not None), cp.int32(dgb is not None)))
    return dx, dgb


def cross_entropy_rows(logits, t, smooth, dlogits, row_loss):
    """minivit.layers.loss.cross_entropy for logits (B, K), targets t (B, K) smoothed here by
    `smooth`: dlogits, and each row's loss / B into row_loss (their sum is the loss)."""
    _contig(logits, t, dlogits, row_loss)
    B, K = logits.shape
    _launch_scaled("xent", B, K, (logits, t, dlogits, row_loss), logits.dtype, smooth, _cp())
