"""The conv models give the same logits, gradients and BN running statistics on NumPy and on
CuPy (skipped without CuPy and a CUDA device)."""
import numpy as np
import pytest
from conftest import requires_cuda
from test_cmt import TINY as CMT_TINY
from test_hybrid import TINY as HYBRID_TINY

from minivit import backend
from minivit.cmt import cmt_backward, cmt_forward, init_cmt_params, init_cmt_state
from minivit.hybrid import hybrid_backward, hybrid_forward, init_hybrid_params, init_hybrid_state

MODELS = {"hybrid": (HYBRID_TINY, init_hybrid_params, init_hybrid_state, hybrid_forward,
                     hybrid_backward),
          "cmt": (CMT_TINY, init_cmt_params, init_cmt_state, cmt_forward, cmt_backward)}


@requires_cuda
@pytest.mark.parametrize("name", sorted(MODELS))
def test_numpy_and_cupy_agree(name):
    cfg, init, init_state, forward, backward = MODELS[name]
    x = np.random.default_rng(0).standard_normal((3, 3, cfg.image_size, cfg.image_size))
    results = []
    for b in ("numpy", "cupy"):
        backend.use(b)
        params, state = init(cfg, seed=1, dtype="float64"), init_state(cfg, "float64")
        logits, cache = forward(params, backend.to_device(x), cfg, train=True, state=state)
        dx, grads = backward(logits * 0 + 1e-2, cache)
        results.append({"logits": logits, "dx": dx, **grads, **state})
    for k, v in results[0].items():
        np.testing.assert_allclose(backend.to_numpy(results[1][k]), backend.to_numpy(v),
                                   rtol=1e-9, atol=1e-12, err_msg=k)
