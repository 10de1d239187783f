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

_cache = {}


def enabled(a) -> bool:
    """True for a float32/float64 CuPy array when fused kernels are on (MINIVIT_FUSED != "0");
    float16 (mixed precision, minivit/precision.py) runs the plain xp code."""
    return type(a).__module__.split(".")[0] == "cupy" and os.environ.get("MINIVIT_FUSED") != "0" \
        and a.dtype.char in "fd"


def _cp():
    import cupy  # noqa: PLC0415 - only reached with CuPy arrays
    return cupy


# name -> (inputs, outputs, body) of each ElementwiseKernel. The bodies are plain C++ over one
# element; tests/cpu_kernels.py compiles them for the CPU too, so CI checks them without a GPU.
_GELU = "T c = (T)0.5 * ((T)1 + erf(x * (T)0.70710678118654752)); cdf = c; y = x * c;"
ELEMENTWISE = {
    "gelu_fwd": ("T x", "T y, T cdf", _GELU),
    "gelu_bias_fwd": ("T b", "T x, T y, T cdf", "x = x + b; " + _GELU),   # x + b kept in x
    "gelu_bwd": ("T dy, T x, T cdf", "T dx",
                 "dx = dy * (cdf + x * (T)0.39894228040143268 * exp((T)-0.5 * x * x));"),
    "bias_res": ("T y, T b, T r", "T out", "out = y + b + r;"),
    "masked_res": ("T x, T m, T r", "T out", "out = r + x * m;"),     # drop-path + residual
    "masked_bias_res": ("T x, T b, T m, T r", "T out", "out = r + (x + b) * m;"),  # + the bias
    "adamw": ("T g0, T gs, float64 lr, float64 b1, float64 b2, float64 eps, float64 decay, "
              "float64 c1, float64 c2", "T p, T m, T v",
              "T g = g0 * gs; m = (T)b1 * m + (T)(1 - b1) * g; v = (T)b2 * v + (T)(1 - b2) * g * g;"
              "p = p * (T)(1 - decay) - (T)(lr / c1) * m / (sqrt(v / (T)c2) + (T)eps);"),
}
# ReductionKernel: (input, output, map, reduce, post-map, identity)
SUMSQ = ("T x", "float64 y", "(double)x * (double)x", "a + b", "y = a", "0")


def _elementwise(name):
    if name not in _cache:
        _cache[name] = _cp().ElementwiseKernel(*ELEMENTWISE[name], "minivit_" + name)
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


# A warp's 32 lanes combine their values by shuffles: every lane gets the sum / max / min.
WARP_SRC = r"""
template<typename T> __device__ T warp_sum(T a) {
    for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffff, a, o);
    return a;
}
template<typename T> __device__ T warp_max(T a) {
    for (int o = 16; o > 0; o >>= 1) a = max(a, __shfl_xor_sync(0xffffffff, a, o));
    return a;
}
template<typename T> __device__ T warp_min(T a) {
    for (int o = 16; o > 0; o >>= 1) a = min(a, __shfl_xor_sync(0xffffffff, a, o));
    return a;
}
"""
# Row kernels: one warp (32 threads) per row, shuffles for the row's max and sums. CUDA C++,
# run on the CPU too by tests/cpu_kernels.py (a warp emulated by 32 threads in lockstep).
ROWS_SRC = WARP_SRC + r"""
template<typename T>
__global__ void softmax_fwd(const T* s, T* out, long long rows, int n, T scale) {
    long long r = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const T* a = s + r * n;  T* o = out + r * n;
    T m = a[0];
    for (int j = lane; j < n; j += 32) m = max(m, a[j]);
    m = warp_max(m);
    T z = 0;
    for (int j = lane; j < n; j += 32) { T e = exp(scale * (a[j] - m)); o[j] = e; z += e; }
    T inv = (T)1 / warp_sum(z);
    for (int j = lane; j < n; j += 32) o[j] *= inv;
}
template<typename T>
__global__ void softmax_bwd(const T* dA, const T* A, T* out, long long rows, int n, T scale) {
    long long r = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const T* d = dA + r * n;  const T* a = A + r * n;  T* o = out + r * n;
    T dot = 0;
    for (int j = lane; j < n; j += 32) dot += d[j] * a[j];
    dot = warp_sum(dot);
    for (int j = lane; j < n; j += 32) o[j] = scale * a[j] * (d[j] - dot);
}
template<typename T>
__global__ void layernorm_fwd(const T* x, const T* gamma, const T* beta, T* y, T* xhat,
                              T* rstd, long long rows, int n, T eps) {
    long long r = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const T* a = x + r * n;
    T mu = 0;
    for (int j = lane; j < n; j += 32) mu += a[j];
    mu = warp_sum(mu) / n;
    T var = 0;
    for (int j = lane; j < n; j += 32) { T c = a[j] - mu; var += c * c; }
    T rs = (T)1 / sqrt(warp_sum(var) / n + eps);
    for (int j = lane; j < n; j += 32) {
        T h = (a[j] - mu) * rs;
        xhat[r * n + j] = h;  y[r * n + j] = h * gamma[j] + beta[j];
    }
    if (lane == 0) rstd[r] = rs;
}
template<typename T>
__global__ void layernorm_bwd(const T* dy, const T* xhat, const T* gamma, const T* rstd,
                              T* dx, T* dgb, const T* res, long long rows, int n, int add_res,
                              int with_gb) {
    long long r = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const T* d = dy + r * n;  const T* h = xhat + r * n;
    T sg = 0, sgx = 0;
    for (int j = lane; j < n; j += 32) { T g = d[j] * gamma[j]; sg += g; sgx += g * h[j]; }
    sg = warp_sum(sg) / n;  sgx = warp_sum(sgx) / n;
    T* gb = dgb + r * 2 * n;                    // [dy xhat | dy]: this row's dgamma, dbeta terms
    for (int j = lane; j < n; j += 32) {        // dy is read before dx is written: dx may be dy
        if (with_gb) { gb[j] = d[j] * h[j];  gb[n + j] = d[j]; }
        dx[r * n + j] = rstd[r] * (d[j] * gamma[j] - sg - h[j] * sgx)
                        + (add_res ? res[r * n + j] : (T)0);
    }
}
template<typename T>
__global__ void xent(const T* logits, const T* t, T* dlogits, T* row_loss, long long rows,
                     int n, T smooth) {
    long long r = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const T* a = logits + r * n;  const T* tr = t + r * n;  T* d = dlogits + r * n;
    T m = a[0];
    for (int j = lane; j < n; j += 32) m = max(m, a[j]);
    m = warp_max(m);
    T z = 0;
    for (int j = lane; j < n; j += 32) z += exp(a[j] - m);
    T lz = log(warp_sum(z)), inv_b = (T)1 / rows, l = 0;
    for (int j = lane; j < n; j += 32) {
        T tj = tr[j] * ((T)1 - smooth) + smooth / n, lp = a[j] - m - lz;    // t', log p
        l -= tj * lp;  d[j] = (exp(lp) - tj) * inv_b;
    }
    l = warp_sum(l);
    if (lane == 0) row_loss[r] = l * inv_b;
}
"""
_NAMES = [f"{k}<{t}>" for k in ("softmax_fwd", "softmax_bwd", "layernorm_fwd", "layernorm_bwd",
                                 "xent") for t in ("float", "double")]


def compiled(source, names, name, dtype, options=()):
    """The kernel `name<T>` (T = dtype) of CUDA `source`, whose template instances are `names`
    (compiled once per source), called as kernel(grid, block, args)."""
    t = {"float32": "float", "float64": "double"}[str(dtype)]
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
    sc = cp.dtype(dtype).type(scalar)
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
