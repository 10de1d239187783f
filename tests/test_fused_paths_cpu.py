"""The layers' fused paths on the CPU: minivit.kernels_cupy's Python wrappers, launching its
CUDA kernels compiled here (tests/cpu_kernels.py: emulate_kernels_cupy), against the plain
NumPy path of the same layers. Where test_kernels_cpu.py calls each kernel with arguments it
lays out itself, these go through the wrappers (argument order, dtypes, buffers) and the layer
code around them, as a GPU run would. Skipped without g++."""
import numpy as np
import pytest
from cpu_kernels import CXX, emulate_kernels_cupy

from minivit import kernels_cupy
from minivit.backend import default_rng
from minivit.config import ViTConfig
from minivit.layers.dropout import residual_drop_path
from minivit.layers.layernorm import layernorm_backward, layernorm_forward
from minivit.layers.loss import cross_entropy
from minivit.model import vit_backward, vit_forward
from minivit.optim import adamw_init, adamw_step
from minivit.params import init_params

pytestmark = pytest.mark.skipif(CXX is None, reason="needs g++")


def data(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def plain_and_fused(monkeypatch, fn):
    """fn() on the plain path, then on the fused one (kernels emulated)."""
    plain = fn()
    emulate_kernels_cupy(monkeypatch)
    assert kernels_cupy.enabled(np.zeros(1))
    return plain, fn()


def assert_close(a, b):
    for x, y in zip(a, b, strict=True):
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            assert_close(list(x.values()), list(y.values()))
        else:
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_with_residual(monkeypatch, affine):
    x, dy, res = data(3, 5, 33, seed=1) + 2, data(3, 5, 33, seed=2), data(3, 5, 33, seed=3)
    gamma, beta = (data(33, seed=4), data(33, seed=5)) if affine else (None, None)

    def run():
        y, cache = layernorm_forward(x, gamma, beta)
        y = y.copy()                            # no affine: y is xhat, which backward reads
        dx, grads = layernorm_backward(dy, cache, residual=res)
        return y, dx, grads
    assert_close(*plain_and_fused(monkeypatch, run))
    _, cache = layernorm_forward(x, gamma, beta)
    with pytest.raises(ValueError, match="not be out"):
        layernorm_backward(dy, cache, out=res, residual=res)


def test_cross_entropy_and_biased_residual(monkeypatch):
    logits, soft = data(6, 10, seed=1), np.random.default_rng(2).dirichlet(np.ones(10), 6)
    x, r, b = data(6, 4, 8, seed=3), data(6, 4, 8, seed=4), data(8, seed=5)
    m = np.array([0, 1.25, 1.25, 0, 1.25, 1.25])[:, None, None]

    def run():
        return (*cross_entropy(logits, soft, 0.1), *cross_entropy(logits, np.arange(6), 0.0),
                residual_drop_path(r, x, 0.2, None, True, mask=m, bias=b)[0],
                residual_drop_path(r, x, 0.2, None, False, bias=b)[0])
    assert_close(*plain_and_fused(monkeypatch, run))


def test_adamw_with_clipping(monkeypatch):
    params = {"fc.weight": data(4, 6, seed=1), "fc.bias": data(6, seed=2)}
    grads = {"fc.weight": data(4, 6, seed=3) * 10, "fc.bias": data(6, seed=4)}

    def run():
        p = {k: v.copy() for k, v in params.items()}
        state = adamw_init(p)
        for _ in range(3):
            adamw_step(p, grads, state, 1e-2, clip_norm=1.0)
        return p, state["m"], state["v"]
    assert_close(*plain_and_fused(monkeypatch, run))


@pytest.mark.parametrize("train", [False, True])
def test_a_vit_forward_and_backward(monkeypatch, train):
    """The whole model: LayerNorm (no fold where the kernels run), attention's softmax, GELU
    with fc1's bias, the deferred biases in the residual kernels, drop-path."""
    cfg = ViTConfig(image_size=8, patch_size=4, dim=16, depth=2, heads=2, mlp_dim=32,
                    drop_path=0.2 if train else 0.0)
    params = init_params(cfg, seed=1, dtype="float64", zero_head=False)
    x, dlogits = data(3, 3, 8, 8, seed=2), data(3, 10, seed=3)

    def run():
        logits, cache = vit_forward(params, x, cfg, train=train, rng=default_rng(4))
        return (logits.copy(), *vit_backward(dlogits, cache))
    assert_close(*plain_and_fused(monkeypatch, run))


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


@pytest.mark.parametrize("train", [False, True])
def test_a_float16_vit_forward_and_backward(monkeypatch, train):
    """Mixed precision's float16 step on the fused kernels (half storage, float arithmetic)
    against the plain path in float32 on the same half-rounded parameters and images: within
    float16's rounding (relative error of each output and gradient < 1%)."""
    cfg = ViTConfig(image_size=8, patch_size=4, dim=32, depth=2, heads=2, mlp_dim=64,
                    drop_path=0.2 if train else 0.0)
    p16 = {k: v.astype(np.float16) for k, v in
           init_params(cfg, seed=1, dtype="float32", zero_head=False).items()}
    x16, d16 = data(4, 3, 8, 8, seed=2).astype(np.float16), data(4, 10, seed=3).astype(np.float16)

    def run(params, x, dlogits):
        logits, cache = vit_forward(params, x, cfg, train=train, rng=default_rng(4))
        return logits.copy(), vit_backward(dlogits, cache)[1]
    ref = run({k: v.astype(np.float32) for k, v in p16.items()}, x16.astype(np.float32),
              d16.astype(np.float32))
    emulate_kernels_cupy(monkeypatch)
    logits, grads = run(p16, x16, d16)
    assert logits.dtype == np.float16 and all(g.dtype == np.float16 for g in grads.values())
    assert rel_err(logits, ref[0]) < 1e-2
    for k, g in grads.items():
        assert rel_err(g, ref[1][k]) < 1e-2, k
