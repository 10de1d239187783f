"""minivit.kernels_cupy's ElementwiseKernel and ReductionKernel bodies, compiled for the CPU.

A CuPy ElementwiseKernel body is C++ over one element: inputs are values, outputs references,
every argument broadcast to one shape. Here the same body goes into a loop over the elements
(g++, ctypes), so the tests check each kernel's arithmetic without a GPU. What only a GPU can
check (CuPy's code generation, the row kernels' warp shuffles) stays in test_kernels_cupy.py.
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


def _build(source):
    """Compile C++ source to a shared library (cached by content) and load it."""
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    if key not in _built:
        folder = tempfile.mkdtemp(prefix="minivit_cpu_kernel_")
        src, lib = os.path.join(folder, "k.cpp"), os.path.join(folder, "k.so")
        with open(src, "w") as f:
            f.write(source)
        subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", lib, src], check=True,
                       capture_output=True, text=True)
        _built[key] = ctypes.CDLL(lib)
    return _built[key]


HEADER = "#include <cmath>\nusing std::erf; using std::exp; using std::sqrt;\n"


def elementwise(spec, dtype):
    """A callable f(*args) like CuPy's kernel(*args) for spec = (inputs, outputs, body) with T
    = dtype: args are arrays or scalars in the kernel's order (inputs, then outputs);
    outputs are written in place."""
    ins, outs, body = spec
    params = [(t, n, False) for t, n in _params(ins)] + [(t, n, True) for t, n in _params(outs)]
    t_name = {"float32": "float", "float64": "double"}[np.dtype(dtype).name]
    lines = [f"typedef {t_name} T;", 'extern "C" void run(long long n, void** a) {',
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
