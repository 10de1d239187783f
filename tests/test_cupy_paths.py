"""The CuPy-only paths of the sixteenth session against NumPy, on a GPU (skipped without one):
packed AdamW, the LayerNorm left unfolded, RandAugment's slot and sampler, drop-path masks;
and the eighteenth session's fused augmentation against the plain CuPy pipeline.
On the CPU the same paths run on benchmarks/count_ops.py's stand-in (tests/test_count_ops.py)."""
import numpy as np
import pytest
from conftest import requires_cuda

pytestmark = requires_cuda


def dev(a):
    import cupy
    return cupy.asarray(a)


def host(a):
    import cupy
    return cupy.asnumpy(a)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_packed_adamw_matches_numpy(dtype):
    from minivit.config import ViTConfig
    from minivit.optim import adamw_init, adamw_step, pack_adamw
    from minivit.params import init_params
    cfg = ViTConfig(image_size=8, patch_size=4, dim=16, depth=2, heads=2, mlp_dim=32)
    params = init_params(cfg, seed=1, dtype=dtype, zero_head=False)
    rng = np.random.default_rng(0)
    steps = [{k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
             for _ in range(3)]
    ref = {k: v.copy() for k, v in params.items()}
    ref_state = adamw_init(ref)
    gpu = {k: dev(v) for k, v in params.items()}
    state = adamw_init(gpu)
    assert pack_adamw(gpu, state)
    for g in steps:
        adamw_step(ref, g, ref_state, 1e-2, weight_decay=0.1, clip_norm=1.0)
        adamw_step(gpu, {k: dev(v) for k, v in g.items()}, state, 1e-2, weight_decay=0.1,
                   clip_norm=1.0)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for k in params:
        np.testing.assert_allclose(host(gpu[k]), ref[k], rtol=tol, atol=tol, err_msg=k)
        np.testing.assert_allclose(host(state["v"][k]), ref_state["v"][k], rtol=tol, atol=tol)


def test_vit_gradients_on_cupy_match_numpy():
    from minivit.backend import default_rng
    from minivit.config import ViTConfig
    from minivit.model import vit_backward, vit_forward
    from minivit.params import init_params
    cfg = ViTConfig(image_size=8, patch_size=4, dim=16, depth=2, heads=2, mlp_dim=32)
    params = init_params(cfg, seed=1, dtype="float64", zero_head=False)
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8))
    dlogits = np.random.default_rng(3).standard_normal((3, 10))
    logits, cache = vit_forward(params, x, cfg, train=False, rng=default_rng(0))
    _, grads = vit_backward(dlogits, cache)
    g_logits, g_cache = vit_forward({k: dev(v) for k, v in params.items()}, dev(x), cfg)
    _, g_grads = vit_backward(dev(dlogits), g_cache)
    np.testing.assert_allclose(host(g_logits), logits, rtol=1e-10, atol=1e-12)
    assert g_grads.keys() == grads.keys()
    for k in grads:
        np.testing.assert_allclose(host(g_grads[k]), grads[k], rtol=1e-9, atol=1e-11, err_msg=k)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_randaug_slot_and_sampler_match_numpy(dtype):
    from minivit.data import randaug as R
    x = np.random.default_rng(4).random((30, 3, 8, 8)).astype(dtype)
    idx = np.arange(30) % (2 * len(R.OPS))                            # every op, both signs
    T, F, luma = R._table(np, x.dtype, 0.3, R.OPS, 8, 8)
    gT, gF, gluma = R._table(__import__("cupy"), x.dtype, 0.3, R.OPS, 8, 8)
    ref = R.colour_ops(x, T[idx], F[idx], luma)
    got = R.colour_ops(dev(x), gT[dev(idx)], gF[dev(idx)], gluma)
    tol = 1e-5 if dtype == "float32" else 1e-12
    close = np.isclose(host(got), ref, atol=tol)                      # equalize may move a level
    assert close.mean() > 0.999 and np.abs(host(got) - ref).max() <= 1 / 255 + tol
    A = T[idx][:, R._M].reshape(30, 3, 3)
    np.testing.assert_allclose(host(R.affine_sample(dev(x), dev(A))), R.affine_sample(x, A),
                               atol=tol)


def test_drop_path_masks_on_cupy():
    import cupy

    from minivit import backend
    from minivit.backend import default_rng
    from minivit.layers.dropout import drop_path_masks
    backend.use("cupy")
    try:
        masks = drop_path_masks(default_rng(0), 4000, [0.0, 0.2], "float32")
    finally:
        backend.use("numpy")
    assert masks[0] is None
    for m in masks[1]:
        assert isinstance(m, cupy.ndarray) and m.shape == (4000, 1, 1)
        values = host(m)
        assert set(np.unique(values)) <= {0.0, np.float32(1 / 0.8)}
        assert abs((values > 0).mean() - 0.8) < 0.03


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_new_kernels_match_numpy(dtype):
    """gelu_bias_fwd and masked_res through CuPy's code generation (their bodies are also
    checked on the CPU: tests/test_kernels_cpu.py)."""
    from minivit import kernels_cupy
    from minivit.layers.gelu import gelu_forward
    rng = np.random.default_rng(0)
    x, b = rng.standard_normal((4, 5, 8)).astype(dtype), rng.standard_normal(8).astype(dtype)
    gx, out, cdf = dev(x), dev(np.empty_like(x)), dev(np.empty_like(x))
    kernels_cupy.gelu_forward(gx, out, cdf, dev(b))
    ref, cache = gelu_forward(x + b, "none")
    tol = 2e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(host(gx), x + b, rtol=tol, atol=tol)
    np.testing.assert_allclose(host(out), ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(host(cdf), cache[1], rtol=tol, atol=tol)
    m = np.array([0.0, 1.25, 1.25, 0.0], dtype)[:, None, None]
    r = rng.standard_normal(x.shape).astype(dtype)
    res = kernels_cupy.masked_residual(dev(x), dev(m), dev(r), dev(np.empty_like(x)))
    np.testing.assert_allclose(host(res), r + x * m, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_augmentation_matches_the_plain_pipeline(dtype, monkeypatch):
    """minivit/data/augment_fused.py's two kernels against the plain CuPy pipeline
    (MINIVIT_FUSED=0), the same CuPy generator seed: the same draws. The kernels are built
    without fused multiply-adds, but sums (the mean grey, the 4 bilinear terms) go in another
    order, which in float32 may move a pixel across a posterize/solarize step: a few elements
    (< 0.1%) may differ by more than rounding."""
    from minivit import backend
    from minivit.backend import default_rng
    from minivit.data import augment_fused
    from minivit.data.loader import AugmentConfig, train_batch
    aug = AugmentConfig(crop=4, flip=True, randaug_n=2, randaug_m=9, mixup=0.8, cutmix=1.0,
                        erase=0.25)
    u8 = dev(np.random.default_rng(1).integers(0, 256, (64, 3, 32, 32), dtype=np.uint8))
    labels = dev(np.random.default_rng(2).integers(0, 10, 64))
    assert augment_fused.enabled(u8, dtype)

    def batch():
        backend.use("cupy")                  # default_rng: a CuPy generator, CuPy draws
        try:
            return [host(a) for a in train_batch(u8, labels, default_rng(3), aug, 10, dtype)]
        finally:
            backend.use("numpy")
    fused = batch()
    monkeypatch.setenv("MINIVIT_FUSED", "0")
    plain = batch()
    for f, p in zip(fused, plain, strict=True):
        assert f.dtype == p.dtype and f.shape == p.shape
        off = np.abs(f - p) > (1e-10 if dtype == "float64" else 3e-5)
        assert off.mean() < (1e-12 if dtype == "float64" else 1e-3), off.mean()


def test_float16_vit_on_the_fused_kernels_follows_float32():
    """Mixed precision's float16 forward and backward on the fused kernels (the half
    instances: f16 row kernels, float16 element bodies) against float32 on the same
    half-rounded parameters and images (as tests/test_fused_paths_cpu.py does on the CPU)."""
    from minivit import backend, kernels_cupy
    from minivit.backend import default_rng
    from minivit.config import ViTConfig
    from minivit.model import vit_backward, vit_forward
    from minivit.params import init_params
    cfg = ViTConfig(image_size=8, patch_size=4, dim=32, depth=2, heads=2, mlp_dim=64,
                    drop_path=0.2)
    p16 = {k: dev(v.astype(np.float16)) for k, v in
           init_params(cfg, seed=1, dtype="float32", zero_head=False).items()}
    g = np.random.default_rng(2)
    x16, d16 = (dev(g.standard_normal(s).astype(np.float16)) for s in ((4, 3, 8, 8), (4, 10)))
    assert kernels_cupy.enabled(x16)

    def run(params, x, dlogits):
        backend.use("cupy")                  # default_rng: a CuPy generator, CuPy masks
        try:
            logits, cache = vit_forward(params, x, cfg, train=True, rng=default_rng(4))
        finally:
            backend.use("numpy")
        grads = vit_backward(dlogits, cache)[1]
        return host(logits).astype(np.float64), {k: host(v).astype(np.float64)
                                                 for k, v in grads.items()}
    ref = run({k: v.astype("float32") for k, v in p16.items()}, x16.astype("float32"),
              d16.astype("float32"))
    got = run(p16, x16, d16)
    rel = lambda a, b: np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)  # noqa: E731
    assert rel(got[0], ref[0]) < 1e-2
    for k in ref[1]:
        assert rel(got[1][k], ref[1][k]) < 1e-2, k


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_batched_gemm_reads_transposed_views_in_place(dtype):
    """minivit.batched_gemm on a GPU: each of attention's products through the direct cuBLAS
    call (no fallback: its once-per-layout check against CuPy's matmul passed) gives CuPy's
    matmul's result."""
    from test_batched_gemm import attention_operands

    from minivit import batched_gemm
    tol = {"float16": 2e-2, "float32": 1e-5, "float64": 1e-12}[dtype]
    import cupy
    batched_gemm._checked.clear()
    for name, (a, b) in attention_operands(to=lambda x: dev(x.astype(dtype))).items():
        assert batched_gemm.plan(a, b, cupy.empty(a.shape[:-1] + b.shape[-1:], dtype))
        out = cupy.zeros(a.shape[:-1] + b.shape[-1:], dtype)
        batched_gemm.matmul(a, b, out, cupy)
        np.testing.assert_allclose(host(out), host(cupy.matmul(a, b)), rtol=tol, atol=tol,
                                   err_msg=name)
    assert batched_gemm._checked and all(batched_gemm._checked.values())   # none fell back
