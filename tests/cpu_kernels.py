"""minivit.kernels_cupy's ElementwiseKernel and ReductionKernel bodies, compiled for the CPU.

A CuPy ElementwiseKernel body is C++ over one element: inputs are values, outputs references,
every argument broadcast to one shape. Here the same body goes into a loop over the elements
(g++, ctypes), so the tests check each kernel's arithmetic without a GPU. What only a GPU can
check (CuPy's code generation, launches, memory) stays in test_kernels_cupy.py.

The row kernels (minivit.kernels_cupy.ROWS_SRC: a warp per row, shuffles for its sums) are CUDA
C++ over one thread. `row_kernel` runs that source on the CPU as a GPU would run it: every warp
of the grid is 32 std::threads, one per lane, with threadIdx/blockIdx their own;
__shfl_xor_sync(mask, v, o) gives each lane the value of lane ^ o, all lanes meeting at a
barrier before and after the exchange, which is the lockstep a warp keeps at a shuffle.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

CXX = shutil.which("g++")
C_TYPES = {"T": "T", "float64": "double", "float32": "float", "int32": "int",
           "int64": "long long", "bool": "bool"}
_built = {}


def _params(spec):
    """"T x, float64 lr" -> [("T", "x"), ("float64", "lr")]."""
    return [tuple(p.split()) for p in spec.split(",") if p.strip()]


def _build(source, flags=()):
    """Compile C++ source to a shared library (cached by content) and load it."""
    key = hashlib.sha256((source + " ".join(flags)).encode()).hexdigest()[:16]
    if key not in _built:
        folder = tempfile.mkdtemp(prefix="minivit_cpu_kernel_")
        src, lib = os.path.join(folder, "k.cpp"), os.path.join(folder, "k.so")
        with open(src, "w") as f:
            f.write(source)
        done = subprocess.run([CXX, "-O1", "-shared", "-fPIC", *flags, "-o", lib, src],
                              check=False, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"g++ could not compile {src}:\n{done.stderr[-3000:]}")
        _built[key] = ctypes.CDLL(lib)
    return _built[key]


HEADER = ("#include <cmath>\nusing std::erf; using std::exp; using std::sqrt;\n"
          "typedef _Float16 float16;\n")          # CuPy's float16: IEEE half, g++'s _Float16
T_NAMES = {"float32": "float", "float64": "double", "float16": "float16"}


def elementwise(spec, dtype):
    """A callable f(*args) like CuPy's kernel(*args) for spec = (inputs, outputs, body) with T
    = dtype: args are arrays or scalars in the kernel's order (inputs, then outputs);
    outputs are written in place."""
    ins, outs, body = spec
    params = [(t, n, False) for t, n in _params(ins)] + [(t, n, True) for t, n in _params(outs)]
    from minivit.kernels_cupy import PREAMBLE  # noqa: PLC0415
    t_name = T_NAMES[np.dtype(dtype).name]
    lines = [PREAMBLE, f"typedef {t_name} T;", 'extern "C" void run(long long n, void** a) {',
             "  for (long long i = 0; i < n; ++i) {"]
    for k, (t, name, out) in enumerate(params):
        c = C_TYPES[t]
        lines.append(f"    {c}& {name} = (({c}*)a[{k}])[i];" if out else
                     f"    const {c} {name} = ((const {c}*)a[{k}])[i];")
    lines += ["    {", "      " + body, "    }", "  }", "}"]
    lib = _build(HEADER + "\n".join(lines) + "\n")

    def call(*args):
        outs_ = [a for a, (_, _, out) in zip(args, params, strict=True) if out]
        shape = np.broadcast_shapes(*[np.shape(a) for a in args])
        host = []
        for a, (t, _, out) in zip(args, params, strict=True):
            dt = np.dtype(dtype) if t == "T" else np.dtype(t)
            host.append(a if out else np.ascontiguousarray(np.broadcast_to(
                np.asarray(a, dtype=dt), shape)))
        for a in outs_:
            assert a.flags.c_contiguous and a.shape == shape
        ptrs = (ctypes.c_void_p * len(host))(*[h.ctypes.data for h in host])
        lib.run(ctypes.c_longlong(int(np.prod(shape))), ptrs)
    return call


def reduction(spec, dtype):
    """A callable f(x) -> float like CuPy's ReductionKernel(x) over all of x, for spec =
    (input, output, map, reduce, post-map, identity) (one input, one scalar output)."""
    (t_in, x_name), = _params(spec[0])
    (t_out, y_name), = _params(spec[1])
    t_name = {"float32": "float", "float64": "double"}[np.dtype(dtype).name]
    out_c = C_TYPES[t_out]
    source = HEADER + "\n".join([
        f"typedef {t_name} T;",
        f'extern "C" {out_c} run(long long n, const T* xs) {{',
        f"  {out_c} acc = {spec[5]};",
        "  for (long long i = 0; i < n; ++i) {",
        f"    const T {x_name} = xs[i];",
        f"    {out_c} a = acc, b = {spec[2]};",
        f"    acc = {spec[3]};",
        "  }",
        f"  {out_c} {y_name}; {{ {out_c} a = acc; {spec[4]}; }}",
        f"  return {y_name};", "}"]) + "\n"
    lib = _build(source)
    lib.run.restype = {"double": ctypes.c_double, "float": ctypes.c_float}[out_c]

    def call(x):
        x = np.ascontiguousarray(x, dtype=dtype)
        return lib.run(ctypes.c_longlong(x.size), ctypes.c_void_p(x.ctypes.data))
    return call


SIMT = r"""
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
using std::exp; using std::fabs; using std::floor; using std::log; using std::max;
using std::min; using std::sqrt;
#include <cstring>
#define __global__
#define __device__
#define __forceinline__
static float half_to_float(unsigned short h) { _Float16 v; memcpy(&v, &h, 2); return v; }
static unsigned short float_to_half(float f) {       // round to nearest even, as cvt.rn.f16
    _Float16 v = (_Float16)f; unsigned short h; memcpy(&h, &v, 2); return h;
}
struct Dim3 { unsigned x; };
static thread_local Dim3 threadIdx, blockIdx;
static Dim3 blockDim;
struct WarpBarrier {                 // the running warp's 32 lanes meet here; if one never
    std::mutex mu;                   // comes (a lane returned or branched past a shuffle), the
    std::condition_variable cv;      // others give up after 5 s and the launch reports it
    int count = 0, phase = 0;
    bool broken = false;
    void wait() {
        std::unique_lock<std::mutex> lock(mu);
        if (broken) return;
        int ph = phase;
        if (++count == 32) { count = 0; ++phase; cv.notify_all(); return; }
        if (!cv.wait_for(lock, std::chrono::seconds(5), [&] { return phase != ph || broken; })) {
            broken = true;
            cv.notify_all();
        }
    }
};
static WarpBarrier* warp;
template<typename V> V __shfl_xor_sync(unsigned, V v, int lane_mask) {
    static V slot[32];
    int lane = threadIdx.x % 32;
    slot[lane] = v;
    warp->wait();                                     // every lane has written
    V got = slot[lane ^ lane_mask];
    warp->wait();                                     // every lane has read
    return got;
}
static void __syncwarp(unsigned = 0xffffffff) { warp->wait(); }
template<typename V> V atomicAdd(V* a, V v) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); }
template<typename F> static int launch(int blocks, int threads, F kernel) {
    blockDim.x = threads;
    for (int b = 0; b < blocks; ++b)
        for (int w = 0; w < threads / 32; ++w) {     // one warp at a time
            WarpBarrier bar;
            warp = &bar;
            std::vector<std::thread> lanes;
            for (int l = 0; l < 32; ++l)
                lanes.emplace_back([=] { blockIdx.x = b; threadIdx.x = w * 32 + l; kernel(); });
            for (auto& t : lanes) t.join();
            if (bar.broken) return 1;
        }
    return 0;
}
"""
_ROW_ARG = {"l": ("long long", ctypes.c_longlong), "i": ("int", ctypes.c_int)}
# a letter per pointer argument: the array's dtype (p: the kernel's T) and C type
_POINTERS = {"p": (None, "{t}*"), "u": ("uint8", "unsigned char*"), "q": ("int64", "long long*"),
             "d": ("float64", "double*"), "b": ("bool", "bool*"), "n": ("int32", "int*")}
_ROW_ARG.update({k: (c, ctypes.c_void_p) for k, (_, c) in _POINTERS.items()})
# The kernels of minivit.kernels_cupy.ROWS_SRC and minivit.data.augment_cuda.AUGMENT_SRC: a
# letter per argument, a pointer (_POINTERS), l long long, i int, T a scalar of dtype T.
ROW_SIGNATURES = {"softmax_fwd": "ppliT", "softmax_bwd": "pppliT",
                  "layernorm_fwd": "ppppppliT", "layernorm_bwd": "pppppppliii",
                  "xent": "ppppliT", "randaug_crop_flip": "uppnqpbpqqpTiiiiiiii",
                  "mix_normalize_erase": "pppqddpppppppppiiiiiiiTTT"}


def row_kernel(source, name, signature, dtype):
    """A callable f(grid, *args) that runs the template kernel `name<T>` of CUDA `source` on
    the CPU for T = dtype, as `kernel(grid, block, args)` would on a GPU: grid = (blocks,
    threads); args are arrays and scalars in the kernel's order (signature: ROW_SIGNATURES).
    A warp whose lanes do not all reach a shuffle raises instead of hanging."""
    t = {"float32": "float", "float64": "double", "float16": "f16"}[np.dtype(dtype).name]
    c = "float" if t == "f16" else t                   # the compute type: T scalars are C
    c_real = {"float": ctypes.c_float, "double": ctypes.c_double}[c]
    kinds = [_ROW_ARG.get(k, (c, c_real)) for k in signature]
    params = ", ".join(f"{ct.format(t=t)} a{j}" for j, (ct, _) in enumerate(kinds))
    args = ", ".join(f"a{j}" for j in range(len(kinds)))
    lib = _build(SIMT + source + f'\nextern "C" int run(int blocks, int threads, {params}) '
                 f"{{ return launch(blocks, threads, [=] {{ {name}<{t}>({args}); }}); }}\n",
                 ("-std=c++17", "-pthread"))
    lib.run.argtypes = [ctypes.c_int, ctypes.c_int] + [ct for _, ct in kinds]

    def call(grid, *values):
        conv = []
        for k, v in zip(signature, values, strict=True):
            if k in _POINTERS:
                assert v.dtype == np.dtype(_POINTERS[k][0] or dtype), (name, k, v.dtype)
                assert v.flags.c_contiguous
                conv.append(v.ctypes.data)
            else:
                conv.append(float(v) if k == "T" else int(v))
        if lib.run(*(int(g) for g in grid), *conv):
            raise RuntimeError(f"{name}: a warp's lanes did not all reach a shuffle")
    return call


def emulate_kernels_cupy(monkeypatch):
    """Make minivit.kernels_cupy run on NumPy arrays: enabled() is true for float32/float64
    NumPy arrays, and its launches go to the kernels compiled here (row kernels emulated, element
    bodies and the sum of squares looped), so the layers' fused paths, their Python wrappers
    included, run on the CPU with CUDA's own kernel text."""
    from minivit import kernels_cupy as k  # noqa: PLC0415

    def row(name, dtype):
        run = row_kernel(k.ROWS_SRC, name, ROW_SIGNATURES[name], dtype)
        return lambda grid, block, args: run((grid[0], block[0]), *args)

    def element(name):
        def launch(*args):
            dtype = next(a.dtype for a in args if isinstance(a, np.ndarray) and a.ndim)
            elementwise(k.ELEMENTWISE[name], dtype)(*args)
        return launch

    monkeypatch.setattr(k, "enabled", lambda a: isinstance(a, np.ndarray) and
                        a.dtype.char in "efd")
    monkeypatch.setattr(k, "_cp", lambda: np)
    monkeypatch.setattr(k, "_row_kernel", row)
    monkeypatch.setattr(k, "_elementwise", element)
    monkeypatch.setitem(k._cache, "sumsq", lambda x: np.asarray(reduction(k.SUMSQ, x.dtype)(x)))


def emulate_augment_fused(monkeypatch):
    """Make minivit.data.augment_fused run on NumPy arrays (loader.train_batch takes it for a
    uint8 NumPy batch), its two launches going to the CUDA text run here."""
    from minivit.data import augment_cuda, augment_fused  # noqa: PLC0415

    def kernel(name, dtype):
        run = row_kernel(augment_cuda.AUGMENT_SRC, name, ROW_SIGNATURES[name], dtype)
        return lambda grid, block, args: run((grid[0], block[0]), *args)

    monkeypatch.setattr(augment_fused, "enabled", lambda u8, dtype: isinstance(u8, np.ndarray))
    monkeypatch.setattr(augment_fused, "_cp", lambda: np)
    monkeypatch.setattr(augment_fused, "_kernel", kernel)
