"""minivit.kernels_cupy's and minivit.data.augment_cuda's CUDA sources compiled by NVRTC, CUDA's
runtime compiler, the one CuPy uses. Compiling needs no GPU, only libnvrtc (`pip install
nvidia-cuda-nvrtc`; .ci/run installs it); without it these tests skip.
tests/test_kernels_cpu.py checks what the kernels compute; this checks that the same text is
valid CUDA C++ for the device (math overloads, shuffles), which g++ cannot. Each element body
is compiled in a kernel shaped like CuPy's ElementwiseKernel: `typedef <float|double> T;`,
inputs as values, outputs as references.
"""
import ctypes
import glob
import os
import site

import pytest
from cpu_kernels import C_TYPES, _params

from minivit import kernels_cupy
from minivit.data import augment_cuda, augment_fused

ARCH = "-arch=compute_90"                       # the H100's; PTX only, no device needed


def _load_nvrtc():
    names = ["libnvrtc.so.13", "libnvrtc.so.12"]
    for root in site.getsitepackages() + [site.getusersitepackages()]:
        names += sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib", "libnvrtc.so.1[23]")))
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


NVRTC = _load_nvrtc()
pytestmark = pytest.mark.skipif(NVRTC is None, reason="needs libnvrtc (pip install "
                                "nvidia-cuda-nvrtc)")


def compile_cuda(source, names=(), options=()):
    """'' when NVRTC compiles `source` (instantiating the template kernels `names`), else
    NVRTC's log."""
    prog = ctypes.c_void_p()
    assert NVRTC.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"k.cu", 0, None,
                                    None) == 0
    try:
        for n in names:
            assert NVRTC.nvrtcAddNameExpression(prog, n.encode()) == 0
        flags = [ARCH, "-std=c++14", *options]
        opts = (ctypes.c_char_p * len(flags))(*(f.encode() for f in flags))
        if NVRTC.nvrtcCompileProgram(prog, len(flags), opts) == 0:
            return ""
        size = ctypes.c_size_t()
        NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        NVRTC.nvrtcGetProgramLog(prog, log)
        return log.value.decode() or "failed with an empty log"
    finally:
        NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))


# CuPy's float16 class as far as the bodies may use it: explicit conversions to and from float
# only, so a body that did half arithmetic or an implicit conversion would fail here.
FLOAT16 = """struct float16 { unsigned short b;
  __device__ float16() {}  explicit __device__ float16(float f) : b(0) {}
  explicit __device__ operator float() const { return 0.f; } };
"""


def elementwise_source(spec, t):
    """An ElementwiseKernel (inputs, outputs, body) as one __global__ function, T = t, after
    kernels_cupy.PREAMBLE as CuPy puts it."""
    ins, outs, body = spec
    c = C_TYPES                                        # the CPU harness's types and parsing
    params = [(*p, False) for p in _params(ins)] + [(*p, True) for p in _params(outs)]
    args = ", ".join(f"{c[ty]}* p_{n}" for ty, n, _ in params)
    lines = [FLOAT16, kernels_cupy.PREAMBLE, f"typedef {t} T;",
             f'extern "C" __global__ void k(long long size, {args}) {{',
             "  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;",
             "  if (i >= size) return;"]
    lines += [f"  {c[ty]}& {n} = p_{n}[i];" if out else f"  const {c[ty]} {n} = p_{n}[i];"
              for ty, n, out in params]
    return "\n".join(lines + ["  { " + body + " }", "}"])


@pytest.mark.parametrize(("name", "t"), [
    (n, t) for n in sorted(kernels_cupy.ELEMENTWISE) for t in ("float", "double", "float16")
    if not (n == "adamw" and t == "float16")])        # AdamW: the float32 master weights only
def test_elementwise_bodies_compile(name, t):
    assert compile_cuda(elementwise_source(kernels_cupy.ELEMENTWISE[name], t)) == ""


def test_row_kernels_compile():
    assert compile_cuda(kernels_cupy.ROWS_SRC, kernels_cupy._NAMES) == ""


def test_augmentation_kernels_compile():
    src, names = augment_cuda.AUGMENT_SRC, augment_cuda.NAMES
    assert compile_cuda(src, names, augment_fused.FMAD) == ""


def test_a_compile_error_is_reported():
    """The check fails where CUDA does: a function the device does not have."""
    ins, outs, body = kernels_cupy.ELEMENTWISE["gelu_fwd"]
    log = compile_cuda(elementwise_source((ins, outs, body.replace("erf(", "erf_(")), "float"))
    assert "erf_" in log
