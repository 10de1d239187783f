"""benchmarks/op_counter.py and count_ops.py: what they count, and that the CuPy code path
they run on the CPU (fused kernels stood in for by NumPy) computes what the NumPy path does."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import count_ops  # noqa: E402
import op_counter as co  # noqa: E402

from minivit import backend  # noqa: E402
from minivit.backend import default_rng  # noqa: E402
from minivit.config import ViTConfig  # noqa: E402
from minivit.model import vit_backward, vit_forward  # noqa: E402
from minivit.params import init_params  # noqa: E402


def counted(fn):
    co.counts.clear()
    with co.counting(), co.phase("p"):
        fn()
    return co.counts["p"]


def test_what_counts_as_one_launch():
    a = co.wrap(np.arange(12.0).reshape(3, 4))
    assert counted(lambda: a + 1) == 1
    assert counted(lambda: a.reshape(4, 3).T[1:]) == 0                 # views launch nothing
    assert counted(lambda: a[np.array([0, 2])]) == 1                   # advanced indexing
    assert counted(lambda: a.mean(axis=1)) == 1                        # nested ops count once
    assert counted(lambda: a.argmax(axis=1)) == 1                      # a C method, no hook
    assert counted(lambda: co.XP.where(a > 2, a, 0.0)) == 2
    assert counted(lambda: a.astype(a.dtype, copy=False)) == 0
    assert counted(lambda: backend.default_rng(0).random(3)) == 1      # a generator's draw


def test_matmul_counts_the_copies_cupy_makes():
    """CuPy's matmul copies a batched product's operands that are not C-contiguous, a 2-D
    product's that are neither C- nor F-contiguous, and an `out` that is not C-contiguous."""
    a, b = co.wrap(np.ones((2, 3, 4))), co.wrap(np.ones((2, 4, 5)))
    assert counted(lambda: a @ b) == 1
    assert counted(lambda: co.XP.matmul(a, b)) == 1
    assert counted(lambda: a @ b.transpose(0, 2, 1).transpose(0, 2, 1).copy()) == 2
    assert counted(lambda: a.transpose(0, 2, 1).transpose(0, 2, 1) @ b) == 1
    assert counted(lambda: co.XP.matmul(b.transpose(0, 2, 1), a.transpose(0, 2, 1))) == 3
    out = co.wrap(np.empty((3, 2, 5))).transpose(1, 0, 2)
    assert counted(lambda: co.XP.matmul(a, b, out=out)) == 2
    m = co.wrap(np.ones((4, 6)))
    assert counted(lambda: m.T @ m) == 1                                # F order: a flag
    assert counted(lambda: m[:, ::2] @ m[:3]) == 2                      # neither: a copy


@pytest.mark.parametrize("train", [False, True])
def test_cupy_path_with_stand_in_kernels_matches_numpy(train):
    cfg = ViTConfig(image_size=8, patch_size=4, dim=16, depth=2, heads=2, mlp_dim=32,
                    drop_path=0.2 if train else 0.0)
    params = init_params(cfg, seed=1, dtype="float64", zero_head=False)
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8))
    dlogits = np.random.default_rng(3).standard_normal((3, 10))

    def run(params, x, dlogits):
        logits, cache = vit_forward(params, x, cfg, train=train, rng=default_rng(4))
        return logits, vit_backward(dlogits, cache)

    logits, (dx, grads) = run(params, x, dlogits)
    co.counts.clear()
    with co.counting(), co.phase("p"):
        c_logits, (c_dx, c_grads) = run({k: co.wrap(v) for k, v in params.items()},
                                        co.wrap(x), co.wrap(dlogits))
    assert co.counts[("p", "fused.layernorm_forward")] >= 4            # the CuPy path ran
    assert co.counts[("p", "fused.softmax_backward")] == 2
    assert co.counts[("p", "fused.gelu_backward")] == 2
    np.testing.assert_allclose(c_logits, logits, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c_dx, dx, rtol=1e-9, atol=1e-12)
    assert c_grads.keys() == grads.keys()
    for k in grads:
        np.testing.assert_allclose(c_grads[k], grads[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_one_step_counts_every_phase():
    c = count_ops.one_step("full", 8)
    assert all(c[p] > 0 for p in count_ops.PHASES)
    assert c[("optimizer", "fused.adamw_update")] == 2               # packed: decayed, not
    assert c["augment"] < 300 and sum(c[p] for p in count_ops.PHASES) < 800  # what this session cut
    plain = count_ops.one_step("smoke", 8)                                   # int labels, no mixing
    assert 0 < plain["augment"] < c["augment"]


def test_packed_adamw_matches_the_per_parameter_update():
    """pack_adamw (CuPy only: here on the stand-in) updates exactly as adamw_step does per
    parameter, clipping included, with one launch per run of same-decay parameters; a
    parameter replaced afterwards sends the step back to the per-parameter update."""
    from minivit.optim import adamw_init, adamw_step, pack_adamw  # noqa: PLC0415
    cfg = ViTConfig(image_size=8, patch_size=4, dim=16, depth=2, heads=2, mlp_dim=32)
    params = init_params(cfg, seed=1, dtype="float64", zero_head=False)
    rng = np.random.default_rng(0)
    steps = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(3)]
    ref = {k: v.copy() for k, v in params.items()}
    ref_state = adamw_init(ref)
    assert not pack_adamw(ref, ref_state)                              # NumPy: not packed
    for g in steps:
        adamw_step(ref, g, ref_state, 1e-2, weight_decay=0.1, clip_norm=1.0)
    co.counts.clear()
    with co.counting(), co.phase("p"):
        packed = {k: co.wrap(v.copy()) for k, v in params.items()}
        state = adamw_init(packed)
        assert pack_adamw(packed, state)
        for g in steps:
            adamw_step(packed, {k: co.wrap(v) for k, v in g.items()}, state, 1e-2,
                       weight_decay=0.1, clip_norm=1.0)
        assert co.counts[("p", "fused.adamw_update")] == 2 * len(steps)
        packed["head.bias"] = packed["head.bias"].copy()               # no longer a view
        adamw_step(packed, {k: co.wrap(v) for k, v in steps[0].items()}, state, 1e-2)
        assert co.counts[("p", "fused.adamw_update")] == 2 * len(steps) + len(params)
    adamw_step(ref, steps[0], ref_state, 1e-2)
    for k in params:
        for a, b in ((packed[k], ref[k]), (state["m"][k], ref_state["m"][k]),
                     (state["v"][k], ref_state["v"][k])):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=k)
