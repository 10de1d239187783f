"""CUDA C++ text of minivit.kernels_cupy's row kernels: one warp (32 threads) per row, shuffles
for the row's max and sums. Also run on the CPU by tests/cpu_kernels.py (each warp emulated by
32 threads in lockstep) and compiled by NVRTC in tests/test_kernels_nvrtc.py.

Each kernel is a template over the storage type T of its arrays: float, double, or f16 (IEEE
half, mixed precision's activations: minivit/precision.py), whose arithmetic is done in float
(C = Acc<T>::type): ld() reads a value into C, st<T>() rounds one back into T.
"""

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
# Storage and compute types. f16 is a float16 array's element, its 16 bits as they are (no
# header needed: the PTX conversions below, round to nearest even; the CPU emulation defines
# the two conversions itself).
HALF_SRC = r"""
struct f16 { unsigned short bits; };
#ifdef __CUDACC__
__device__ __forceinline__ float half_to_float(unsigned short h) {
    float f;  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));  return f;
}
__device__ __forceinline__ unsigned short float_to_half(float f) {
    unsigned short h;  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));  return h;
}
#endif
template<typename T> struct Acc { typedef T type; };
template<> struct Acc<f16> { typedef float type; };
template<typename T> __device__ T ld(T v) { return v; }
__device__ float ld(f16 v) { return half_to_float(v.bits); }
template<typename T> __device__ T st(typename Acc<T>::type v) { return (T)v; }
template<> __device__ f16 st<f16>(float v) { f16 h;  h.bits = float_to_half(v);  return h; }
"""
ROWS_SRC = WARP_SRC + HALF_SRC + r"""
#define ROW_OF_WARP                                                                   \
    typedef typename Acc<T>::type C;                                                  \
    long long r = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;           \
    int lane = threadIdx.x % 32;                                                      \
    if (r >= rows) return;
template<typename T>
__global__ void softmax_fwd(const T* s, T* out, long long rows, int n,
                            typename Acc<T>::type scale) {
    ROW_OF_WARP
    const T* a = s + r * n;  T* o = out + r * n;
    C m = ld(a[0]);
    for (int j = lane; j < n; j += 32) m = max(m, ld(a[j]));
    m = warp_max(m);
    C z = 0;
    for (int j = lane; j < n; j += 32) {
        C e = exp(scale * (ld(a[j]) - m));
        o[j] = st<T>(e);  z += e;
    }
    C inv = (C)1 / warp_sum(z);
    for (int j = lane; j < n; j += 32) o[j] = st<T>(ld(o[j]) * inv);
}
template<typename T>
__global__ void softmax_bwd(const T* dA, const T* A, T* out, long long rows, int n,
                            typename Acc<T>::type scale) {
    ROW_OF_WARP
    const T* d = dA + r * n;  const T* a = A + r * n;  T* o = out + r * n;
    C dot = 0;
    for (int j = lane; j < n; j += 32) dot += ld(d[j]) * ld(a[j]);
    dot = warp_sum(dot);
    for (int j = lane; j < n; j += 32) o[j] = st<T>(scale * ld(a[j]) * (ld(d[j]) - dot));
}
template<typename T>
__global__ void layernorm_fwd(const T* x, const T* gamma, const T* beta, T* y, T* xhat,
                              T* rstd, long long rows, int n, typename Acc<T>::type eps) {
    ROW_OF_WARP
    const T* a = x + r * n;
    C mu = 0;
    for (int j = lane; j < n; j += 32) mu += ld(a[j]);
    mu = warp_sum(mu) / n;
    C var = 0;
    for (int j = lane; j < n; j += 32) { C c = ld(a[j]) - mu; var += c * c; }
    C rs = (C)1 / sqrt(warp_sum(var) / n + eps);
    for (int j = lane; j < n; j += 32) {
        C h = (ld(a[j]) - mu) * rs;
        xhat[r * n + j] = st<T>(h);  y[r * n + j] = st<T>(h * ld(gamma[j]) + ld(beta[j]));
    }
    if (lane == 0) rstd[r] = st<T>(rs);
}
template<typename T>
__global__ void layernorm_bwd(const T* dy, const T* xhat, const T* gamma, const T* rstd,
                              T* dx, T* dgb, const T* res, long long rows, int n, int add_res,
                              int with_gb) {
    ROW_OF_WARP
    const T* d = dy + r * n;  const T* h = xhat + r * n;
    C sg = 0, sgx = 0;
    for (int j = lane; j < n; j += 32) {
        C g = ld(d[j]) * ld(gamma[j]);
        sg += g;  sgx += g * ld(h[j]);
    }
    sg = warp_sum(sg) / n;  sgx = warp_sum(sgx) / n;
    T* gb = dgb + r * 2 * n;                    // [dy xhat | dy]: this row's dgamma, dbeta terms
    for (int j = lane; j < n; j += 32) {        // dy is read before dx is written: dx may be dy
        C dj = ld(d[j]), hj = ld(h[j]);
        if (with_gb) { gb[j] = st<T>(dj * hj);  gb[n + j] = d[j]; }
        dx[r * n + j] = st<T>(ld(rstd[r]) * (dj * ld(gamma[j]) - sg - hj * sgx)
                              + (add_res ? ld(res[r * n + j]) : (C)0));
    }
}
template<typename T>
__global__ void xent(const T* logits, const T* t, T* dlogits, T* row_loss, long long rows,
                     int n, typename Acc<T>::type smooth) {
    ROW_OF_WARP
    const T* a = logits + r * n;  const T* tr = t + r * n;  T* d = dlogits + r * n;
    C m = ld(a[0]);
    for (int j = lane; j < n; j += 32) m = max(m, ld(a[j]));
    m = warp_max(m);
    C z = 0;
    for (int j = lane; j < n; j += 32) z += exp(ld(a[j]) - m);
    C lz = log(warp_sum(z)), inv_b = (C)1 / rows, l = 0;
    for (int j = lane; j < n; j += 32) {
        C tj = ld(tr[j]) * ((C)1 - smooth) + smooth / n, lp = ld(a[j]) - m - lz;   // t', log p
        l -= tj * lp;  d[j] = st<T>((exp(lp) - tj) * inv_b);
    }
    l = warp_sum(l);
    if (lane == 0) row_loss[r] = st<T>(l * inv_b);
}
"""
TYPES = {"float32": "float", "float64": "double", "float16": "f16"}   # numpy dtype -> T
_NAMES = [f"{k}<{t}>" for k in ("softmax_fwd", "softmax_bwd", "layernorm_fwd", "layernorm_bwd",
                                 "xent") for t in TYPES.values()]
