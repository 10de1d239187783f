"""The training pipeline's augmentation as two CUDA kernels (minivit/data/augment_fused.py runs
them): the plain `xp` pipeline (minivit.data.loader) launches ~200 kernels a batch on a GPU,
where the step waits on launches, not on arithmetic (BENCHMARKS.md, "GPU (CuPy)").

One warp (32 threads) per image; every formula is the plain version's, in its order:
- randaug_crop_flip: uint8 -> [0, 1]; each RandAugment slot's colour ops by the image's table
  row (minivit.data.randaug._table: blend d + f (x - d), solarize, posterize, equalize over 256
  levels, autocontrast); the slots' composed affine map sampled bilinearly (fill 0.5 outside);
  the crop's window in the zero-padded image; the flip. The last three in one pass: output
  pixel (i, j) <- flip j <- crop offset <- affine map <- 4 neighbours.
- mix_normalize_erase: mixup / cutmix with the reversed batch (x_b <- k x_b + (1 - k) x_b',
  x_b' inside the box; t_b <- (1 - s) t_b + s t_b'), (x - mean_c) / std_c, the erasing box's
  N(0, 1) noise.
tests/test_augment_fused_cpu.py runs this text on the CPU (each warp emulated by 32 threads)
against the plain pipeline; tests/test_kernels_nvrtc.py compiles it for the device.
"""
from ..kernels_rows import WARP_SRC
from .randaug import FILL, POSTERIZE_EPS

AUGMENT_SRC = WARP_SRC + r"""
// columns of a table row (minivit.data.randaug._row): 3x3 map, blend factor, d's weights
// (mean grey, grey, smooth), solarize threshold, posterize's 255 / step and step / 255
#define COL_FACTOR 9
#define COL_D 10
#define COL_THRESH 13
#define COL_UP 14
#define COL_DOWN 15

template<typename T> __device__ T grey_at(const T* x, int C, long long HW, long long p,
                                         const T* luma) {          // randaug._grey
    if (C == 3) return x[p] * luma[0] + x[HW + p] * luma[1] + x[2 * HW + p] * luma[2];
    T s = x[p];
    for (int c = 1; c < C; ++c) s += x[c * HW + p];
    return s / (T)C;
}
template<typename T> __device__ T smooth_at(const T* xc, int H, int W, int i, int j) {
    T r[3];                                  // randaug.smooth: row sums, then the column's
    for (int k = 0; k < 3; ++k) {
        const T* row = xc + (long long)min(max(i + k - 1, 0), H - 1) * W;
        r[k] = row[max(j - 1, 0)] + row[j] + row[min(j + 1, W - 1)];
    }
    return (r[0] + r[1] + r[2] + (T)4 * xc[(long long)i * W + j]) / (T)13;
}
template<typename T> __device__ void colour_pass(const T* x, T* y, const T* P, bool posterize,
                                                int C, int H, int W, const T* luma, int lane) {
    long long HW = (long long)H * W;          // randaug.colour_ops up to equalize: x -> y
    T w0 = P[COL_D], w1 = P[COL_D + 1], w2 = P[COL_D + 2], gmean = 0;
    if (w0 != (T)0) {                         // contrast: the image's mean grey
        T s = 0;
        for (long long p = lane; p < HW; p += 32) s += grey_at(x, C, HW, p, luma);
        gmean = warp_sum(s) / (T)HW;
    }
    for (int c = 0; c < C; ++c)
        for (long long p = lane; p < HW; p += 32) {
            T v = x[c * HW + p];
            T g = w1 != (T)0 ? grey_at(x, C, HW, p, luma) : (T)0;
            T s = w2 != (T)0 ? smooth_at(x + c * HW, H, W, (int)(p / W), (int)(p % W)) : (T)0;
            T d = w0 * gmean + w1 * g + w2 * s;
            T z = min(max(d + P[COL_FACTOR] * (v - d), (T)0), (T)1);
            if (z >= P[COL_THRESH]) z = (T)1 - z;
            if (posterize) z = floor(z * P[COL_UP] + (T)POSTERIZE_EPS) * P[COL_DOWN];
            y[c * HW + p] = z;
        }
    __syncwarp();
}
template<typename T> __device__ int level(T v) {       // randaug.equalize's 256 levels
    long long q = (long long)(v * (T)255 + (T)0.5);
    return (int)min(max(q, 0LL), 255LL);
}
template<typename T> __device__ void equalize(T* y, int* hist, int C, long long HW, int lane) {
    for (int k = lane; k < C * 257; k += 32) hist[k] = 0;
    __syncwarp();
    for (int c = 0; c < C; ++c)
        for (long long p = lane; p < HW; p += 32)
            atomicAdd(&hist[c * 257 + level(y[c * HW + p])], 1);
    __syncwarp();
    for (int c = lane; c < C; c += 32) {      // the cdf, and at [256] the count at the lowest level
        int* h = hist + c * 257;
        int run = 0, first = 0;
        for (int q = 0; q < 256; ++q) { run += h[q]; h[q] = run; if (!first) first = run; }
        h[256] = first;
    }
    __syncwarp();
    for (int c = 0; c < C; ++c) {
        const int* cdf = hist + c * 257;
        long long rest = HW - cdf[256];
        if (rest == 0) continue;              // one level: unchanged
        for (long long p = lane; p < HW; p += 32)
            y[c * HW + p] = (T)((double)(cdf[level(y[c * HW + p])] - cdf[256]) / (double)rest);
    }
    __syncwarp();
}
template<typename T> __device__ void autocontrast(T* y, int C, long long HW, int lane) {
    for (int c = 0; c < C; ++c) {
        T* yc = y + c * HW;
        T lo = yc[0], hi = yc[0];
        for (long long p = lane; p < HW; p += 32) { lo = min(lo, yc[p]); hi = max(hi, yc[p]); }
        lo = warp_min(lo);  hi = warp_max(hi);
        if (hi > lo)
            for (long long p = lane; p < HW; p += 32) yc[p] = (yc[p] - lo) / max(hi - lo, (T)1e-12);
    }
    __syncwarp();
}
template<typename T> __device__ T padded_at(const T* xc, int H, int W, int py, int px) {
    return py >= 1 && py <= H && px >= 1 && px <= W ? xc[(long long)(py - 1) * W + px - 1]
                                                    : (T)FILL;
}
template<typename T> __device__ T bilinear(const T* xc, const T* A, int H, int W, long long i,
                                          long long j) {   // randaug.affine_sample, one pixel
    T u = (T)j - (T)((W - 1) / 2.0), v = (T)i - (T)((H - 1) / 2.0);
    T sx = A[0] * u + A[1] * v + A[2] + (T)((W - 1) / 2.0 + 1);
    T sy = A[3] * u + A[4] * v + A[5] + (T)((H - 1) / 2.0 + 1);
    sx = min(max(sx, (T)0), (T)(W + 1));  sy = min(max(sy, (T)0), (T)(H + 1));
    T fx = floor(sx), fy = floor(sy), gx = sx - fx, gy = sy - fy;
    int cx = (int)fx, cy = (int)fy;           // padded: 1 pixel of fill before, 2 after
    return padded_at(xc, H, W, cy, cx) * (((T)1 - gy) * ((T)1 - gx))
           + padded_at(xc, H, W, cy, cx + 1) * (((T)1 - gy) * gx)
           + padded_at(xc, H, W, cy + 1, cx) * (gy * ((T)1 - gx))
           + padded_at(xc, H, W, cy + 1, cx + 1) * (gy * gx);
}
template<typename T>
__global__ void randaug_crop_flip(const unsigned char* u8, T* out, T* work, int* hist,
                                  const long long* slots, const T* table, const bool* flags,
                                  const T* luma, const long long* oy, const long long* ox,
                                  const T* flip_u, T flip_p, int B, int C, int H, int W,
                                  int n_slots, int colour, int geometric, int pad) {
    int b = blockIdx.x, lane = threadIdx.x % 32;
    long long HW = (long long)H * W, CHW = C * HW;
    T* buf[2] = {work + b * CHW, work + (B + b) * CHW};
    for (long long p = lane; p < CHW; p += 32) buf[0][p] = (T)u8[b * CHW + p] * (T)(1.0 / 255.0);
    __syncwarp();
    int cur = 0;
    T A[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1}, R[9];
    for (int s = 0; s < n_slots; ++s) {       // each slot: its colour ops, then A <- M A
        long long r = slots[s * (long long)B + b];
        const T* P = table + r * 16;  const bool* F = flags + r * 3;
        if (colour) {
            colour_pass(buf[cur], buf[1 - cur], P, F[2], C, H, W, luma, lane);
            cur = 1 - cur;
            if (F[0]) equalize(buf[cur], hist + b * C * 257, C, HW, lane);
            if (F[1]) autocontrast(buf[cur], C, HW, lane);
        }
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j)
                R[i * 3 + j] = P[i * 3] * A[j] + P[i * 3 + 1] * A[3 + j] + P[i * 3 + 2] * A[6 + j];
        for (int k = 0; k < 9; ++k) A[k] = R[k];
    }
    const T* src = buf[cur];
    bool flip = flip_p > (T)0 && flip_u[b] < flip_p;
    long long dy = pad ? oy[b] - pad : 0, dx = pad ? ox[b] - pad : 0;
    for (int c = 0; c < C; ++c)
        for (long long p = lane; p < HW; p += 32) {
            long long i = p / W + dy, j = (flip ? W - 1 - p % W : p % W) + dx;   // flip, crop
            T v = 0;                                                            // crop's zeros
            if (i >= 0 && i < H && j >= 0 && j < W)
                v = geometric ? bilinear(src + c * HW, A, H, W, i, j) : src[c * HW + i * W + j];
            out[b * CHW + c * HW + p] = v;
        }
}
template<typename T> __device__ bool in_span(T side, T centre, int n, long long k) {
    return fabs(((T)k + (T)0.5) - centre) < side * (T)(n / 2.0);   // augment._boxes, one axis
}
template<typename T> __device__ bool in_box(T side, T cy, T cx, int H, int W, long long i,
                                           long long j) {
    return in_span(side, cy, H, i) && in_span(side, cx, W, j);
}
template<typename T>
__global__ void mix_normalize_erase(const T* x, T* out, T* targets, const long long* labels,
                                    const double* lam, const double* cut_beta, const T* cut_y,
                                    const T* cut_x, const T* cut_u, const T* er_a,
                                    const T* er_y, const T* er_x, const T* er_p, const T* noise,
                                    const T* mean_std, int B, int C, int H, int W, int K,
                                    int mixup, int cutmix, T erase_p, T area0, T area_span) {
    int b = blockIdx.x, lane = threadIdx.x % 32, r = B - 1 - b;   // r: the partner, reversed
    long long HW = (long long)H * W, CHW = C * HW;
    bool cut = cutmix && (!mixup || cut_u[b] < (T)0.5);
    T keep = mixup && !cut ? (T)lam[b] : (T)1, side = 0, cy = 0, cx = 0;
    if (cutmix) {
        side = sqrt((T)1 - (T)cut_beta[b]);  cy = cut_y[b] * (T)H;  cx = cut_x[b] * (T)W;
    }
    bool erase = erase_p > (T)0 && er_p[b] < erase_p;
    T eside = 0, ey = 0, ex = 0;
    if (erase) {
        eside = sqrt(area0 + area_span * er_a[b]);  ey = er_y[b] * (T)H;  ex = er_x[b] * (T)W;
    }
    for (int c = 0; c < C; ++c)
        for (long long p = lane; p < HW; p += 32) {
            long long i = p / W, j = p % W;
            T v = x[b * CHW + c * HW + p], vr = x[r * CHW + c * HW + p];
            if (mixup) v = keep * v + ((T)1 - keep) * vr;
            if (cut && in_box(side, cy, cx, H, W, i, j)) v = vr;
            v = (v - mean_std[c]) / mean_std[C + c];
            if (erase && in_box(eside, ey, ex, H, W, i, j)) v = noise[b * CHW + c * HW + p];
            out[b * CHW + c * HW + p] = v;
        }
    if (!mixup && !cutmix) return;
    long long rows = 0, cols = 0;             // the box's true area: rows x columns inside
    for (int i = 0; i < H; ++i) rows += in_span(side, cy, H, i);
    for (int j = 0; j < W; ++j) cols += in_span(side, cx, W, j);
    T frac = (T)((double)(rows * cols) / (double)HW), share = cut ? frac : (T)1 - keep;
    for (int k = lane; k < K; k += 32)
        targets[b * K + k] = ((T)1 - share) * (T)(labels[b] == k) + share * (T)(labels[r] == k);
}
""".replace("POSTERIZE_EPS", repr(POSTERIZE_EPS)).replace("FILL", repr(FILL))
NAMES = [f"{k}<{t}>" for k in ("randaug_crop_flip", "mix_normalize_erase")
         for t in ("float", "double")]
