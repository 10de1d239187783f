"""minivit.batched_gemm on the CPU: the cuBLAS arguments plan() derives, run through a
column-major strided batched GEMM written here in NumPy (what cuBLAS computes, from the flat
buffers), must give a @ b for attention's layouts; the layouts cuBLAS cannot read as they lie
get None. On a GPU, batched_gemm.matmul also checks each layout once against CuPy's matmul
(tests/test_cupy_paths.py runs attention through it)."""
import numpy as np
import pytest

from minivit import batched_gemm

B, H, T, Dh = 2, 3, 5, 4


def root(x):
    r = x
    while r.base is not None:
        r = r.base
    return r.reshape(-1), (x.ctypes.data - r.ctypes.data) // x.itemsize


def cublas_reference(p, a, b, out):
    """gemmStridedBatchedEx(transa, transb, m, n, k, 1, A = b's buffer, lda, strideA, B = a's
    buffer, ldb, strideB, 0, C = out's buffer, ldc, strideC, batch), column-major."""
    (fa, oa), (fb, ob), (fc, oc) = root(b), root(a), root(out)

    def mat(buf, off, rows, cols, ld):                    # column-major rows x cols, ld >= rows
        return np.lib.stride_tricks.as_strided(buf[off:], (rows, cols),
                                               (buf.itemsize, ld * buf.itemsize))
    m, n, k = p["m"], p["n"], p["k"]
    for i in range(p["batch"]):
        X = mat(fa, oa + i * p["strideA"], *((k, m) if p["transa"] else (m, k)), p["lda"])
        Y = mat(fb, ob + i * p["strideB"], *((n, k) if p["transb"] else (k, n)), p["ldb"])
        C = mat(fc, oc + i * p["strideC"], m, n, p["ldc"])
        C[...] = (X.T if p["transa"] else X) @ (Y.T if p["transb"] else Y)


def attention_operands(seed=0, to=lambda x: x):
    """Attention's six batched products as (a, b) views; `to` moves the base arrays (to a
    GPU) before the views are taken."""
    g = np.random.default_rng(seed)
    heads = to(g.standard_normal((3, B, H, T, Dh)))           # q, k, v, as attention keeps them
    A = to(g.standard_normal((B, H, T, T)))
    dctx = to(g.standard_normal((B, H, T, Dh)))
    q, k, v = heads
    t = (0, 1, 3, 2)
    return {"q k^T": (q, k.transpose(t)), "A v": (A, v), "dctx v^T": (dctx, v.transpose(t)),
            "A^T dctx": (A.transpose(t), dctx), "dS k": (A, k), "dS^T q": (A.transpose(t), q)}


@pytest.mark.parametrize("name", list(attention_operands()))
def test_the_plan_computes_the_product(name):
    a, b = attention_operands()[name]
    out = np.full(a.shape[:-1] + b.shape[-1:], np.nan)
    p = batched_gemm.plan(a, b, out)
    assert p is not None and p["batch"] == B * H
    cublas_reference(p, a, b, out)
    np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-12, atol=1e-12)


def test_a_transposed_operand_is_read_in_place():
    a, b = attention_operands()["dS^T q"]
    p = batched_gemm.plan(a, b, np.empty((B, H, T, Dh)))
    assert (p["transa"], p["transb"]) == (0, 1)           # b (q) as it lies, a (dS^T) flagged
    a, b = attention_operands()["q k^T"]
    p = batched_gemm.plan(a, b, np.empty((B, H, T, T)))
    assert (p["transa"], p["transb"]) == (1, 0)


def test_layouts_cublas_cannot_read_fall_back():
    q, kt = attention_operands()["q k^T"]
    assert batched_gemm.plan(q[:, :, :1], kt, np.empty((B, H, 1, T))) is None   # one query row
    out = np.empty((B, T, H, T)).transpose(0, 2, 1, 3)                          # strided out
    assert batched_gemm.plan(q, kt, out) is None
    assert batched_gemm.plan(q[:, :1], kt, np.empty((B, 1, T, T))) is None      # batch mismatch
    assert batched_gemm.plan(q[..., ::2], kt[:, :, ::2], np.empty((B, H, T, T))) is None
    assert batched_gemm.plan(q.astype(np.float32), kt, np.empty((B, H, T, T))) is None


def test_overlap_is_detected():
    x = np.zeros((2, 4, 4))
    assert not batched_gemm._disjoint(x[0, ::-1], x[0, 3])                    # reversed view
    assert not batched_gemm._disjoint(x, x[1])
    assert batched_gemm._disjoint(x[0], x[1])
