"""Batched products on CuPy without operand copies: one cuBLAS strided batched GEMM whose
transpose flags take a transposed view (k^T, A^T, dS^T) as it lies in memory.

CuPy's matmul makes each operand of a batched product C-contiguous first
(cupy/_core/_routines_linalg.pyx: `ascontiguousarray`), a copy kernel per transposed view:
attention issues ~24 such copies a training step. Here the same cuBLAS call CuPy makes
(`gemmStridedBatchedEx`, CuPy's handle, data and compute types, so TF32 applies as there) is
made with the flags instead.

Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets B's buffer first
and A's second, m and n swapped (as CuPy does). A batched view X (..., r, c) is "N" when its
matrices are C-contiguous (ld = c) and "T" when it is the transpose of C-contiguous ones
(ld = r); its batch axes must step by r c. Anything else, an `out` that is not C-contiguous,
or memory shared between out and an operand: CuPy's matmul, as before.

Each layout (shapes, strides, flags, dtype) is checked once against CuPy's matmul on first
use; a mismatch or a cuBLAS error sends that layout to CuPy's matmul for the rest of the
process, with a warning. tests/test_batched_gemm.py checks the argument derivation on the CPU
against a column-major GEMM written in NumPy.
"""
import warnings

_checked = {}                 # layout -> True (direct) / False (CuPy's matmul)


def _operand(x):
    """("N" or "T", ld, stride between matrices) of a batched matrix view x, in elements, or
    None when cuBLAS cannot read x as it is."""
    *batch, r, c = x.shape
    s = [st // x.itemsize for st in x.strides]
    if s[-1] == 1 and (s[-2] == c or r == 1):
        flag, ld = "N", c
    elif s[-2] == 1 and (s[-1] == r or c == 1):
        flag, ld = "T", r
    else:
        return None
    step = r * c
    for n, st in zip(reversed(batch), reversed(s[:-2]), strict=True):
        if n > 1 and st != step:
            return None
        step *= n
    return flag, max(ld, 1), r * c


def plan(a, b, out):
    """The cuBLAS arguments of out = a @ b over the batch (all leading axes), as a dict: trans
    flags (0 = N, 1 = T), m, n, k, the leading dimensions and strides (elements) of the first
    operand (b's buffer), the second (a's) and out, and the batch count; None when the product
    cannot go to cuBLAS as it lies."""
    if a.ndim < 3 or a.shape[:-2] != b.shape[:-2] or out.shape != a.shape[:-1] + b.shape[-1:] \
            or a.shape[-1] != b.shape[-2] or not out.flags.c_contiguous \
            or not a.dtype == b.dtype == out.dtype or out.size == 0:
        return None
    pa, pb = _operand(a), _operand(b)
    if pa is None or pb is None:
        return None
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    return {"transa": int(pb[0] == "T"), "transb": int(pa[0] == "T"), "m": n, "n": m, "k": k,
            "lda": pb[1], "strideA": pb[2], "ldb": pa[1], "strideB": pa[2],
            "ldc": n, "strideC": m * n, "batch": out.size // (m * n)}


def _ptr(x):
    """The address of x's first element (a CuPy array; a NumPy one in the tests)."""
    return x.data.ptr if hasattr(x.data, "ptr") else x.ctypes.data


def _bounds(x):
    """[first, last] byte addresses x may touch."""
    lo = hi = _ptr(x)
    for n, st in zip(x.shape, x.strides, strict=True):
        (lo, hi) = (lo + (n - 1) * st, hi) if st < 0 else (lo, hi + (n - 1) * st)
    return lo, hi + x.itemsize - 1


def _disjoint(x, y):
    (a0, a1), (b0, b1) = _bounds(x), _bounds(y)
    return a1 < b0 or b1 < a0


def _launch(p, a, b, out):
    """cublas.gemmStridedBatchedEx as cupy.matmul calls it (cupy/_core/_routines_linalg.pyx),
    with plan p's flags and leading dimensions."""
    import numpy  # noqa: PLC0415 - host scalars alpha, beta (CuPy passes them this way)
    from cupy.cuda import device  # noqa: PLC0415
    from cupy_backends.cuda.api import runtime  # noqa: PLC0415
    from cupy_backends.cuda.libs import cublas  # noqa: PLC0415
    char = out.dtype.char
    data = {"e": runtime.CUDA_R_16F, "f": runtime.CUDA_R_32F, "d": runtime.CUDA_R_64F}[char]
    compute = cublas.CUBLAS_COMPUTE_32F if char == "e" else data
    coef = "f" if char == "e" else char
    one, zero = numpy.array(1, dtype=coef), numpy.array(0, dtype=coef)
    cublas.gemmStridedBatchedEx(
        device.get_cublas_handle(), p["transa"], p["transb"], p["m"], p["n"], p["k"],
        one.ctypes.data, b.data.ptr, data, p["lda"], p["strideA"],
        a.data.ptr, data, p["ldb"], p["strideB"], zero.ctypes.data,
        out.data.ptr, data, p["ldc"], p["strideC"], p["batch"], compute,
        cublas.CUBLAS_GEMM_DEFAULT)
    return out


def _agrees(a, b, out, xp):
    """The direct call's result against xp.matmul's. Its float() reads the device: one sync,
    once per new layout (the first steps, and the first after an image-size change), never
    again for that layout."""
    ref = xp.matmul(a, b)
    err = float(xp.linalg.norm((out - ref).ravel().astype("float64")))
    return err <= 1e-2 * float(xp.linalg.norm(ref.ravel().astype("float64"))) + 1e-30


def matmul(a, b, out, xp):
    """out = a @ b (batched, CuPy arrays): one strided batched GEMM reading transposed views
    in place where plan() allows, else xp.matmul(a, b, out=out)."""
    p = plan(a, b, out) if out.dtype.char in "efd" else None
    if p is None or not (_disjoint(out, a) and _disjoint(out, b)):
        return xp.matmul(a, b, out=out)
    layout = (a.shape, a.strides, b.shape, b.strides, out.dtype.char)
    ok = _checked.get(layout)
    if ok is False:
        return xp.matmul(a, b, out=out)
    try:
        _launch(p, a, b, out)
    except Exception as e:  # noqa: BLE001 - any failure: this layout goes to CuPy's matmul
        warnings.warn(f"minivit.batched_gemm: cuBLAS call failed ({e!r}); "
                      f"CuPy's matmul for this layout", RuntimeWarning, stacklevel=2)
        _checked[layout] = False
        return xp.matmul(a, b, out=out)
    if ok is None:
        ok = _checked[layout] = _agrees(a, b, out, xp)
    if not ok:
        warnings.warn("minivit.batched_gemm: the direct product disagreed with CuPy's matmul; "
                      "CuPy's matmul for this layout", RuntimeWarning, stacklevel=2)
        return xp.matmul(a, b, out=out)
    return out
