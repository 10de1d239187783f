"""One share of the batch per thread (minivit.data_parallel): the same logits, loss and
gradients as the whole batch in one piece, with and without workspaces and dropout; models with
BatchNorm state are never split; the training step and evaluation take the split path."""
import numpy as np
import pytest

from minivit import ViTConfig, blas, cross_entropy, data_parallel, init_params, parallel
from minivit import train as train_module
from minivit.models import get_model, predict_probs
from minivit.optim import adamw_init
from minivit.recipes import TrainConfig
from minivit.workspace import Workspace

CFG = ViTConfig(image_size=8, patch_size=4, num_classes=5, dim=16, depth=2, heads=2,
                mlp_dim=24)
SPEC = get_model("vit")


@pytest.fixture(autouse=True)
def two_owned_threads(monkeypatch):
    """Two threads, and minivit owning the cores whatever BLAS this NumPy has."""
    monkeypatch.setenv("MINIVIT_THREADS", "2")
    monkeypatch.setattr(blas, "owning", lambda: True)


def batch(n=20, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 8, 8)).astype(dtype), rng.integers(0, 5, n)


def whole_batch(params, x, y, cfg=CFG, smoothing=0.1):
    logits, cache = SPEC.forward(params, x, cfg, True, None, {})
    loss, dlogits = cross_entropy(logits, y, smoothing)
    return logits, loss, SPEC.backward(dlogits, cache, input_grad=False)[1]


def test_num_shares():
    x, _ = batch(20)
    assert data_parallel.num_shares(x) == 2
    assert data_parallel.num_shares(x[:15]) == 1                     # under 2 x MIN_SHARE
    assert data_parallel.num_shares(x, state={"bn.running_mean": np.zeros(3)}) == 1


def test_not_owning_or_inside_a_share_means_one_share(monkeypatch):
    x = batch(64)[0]
    assert parallel.run_shares([lambda: data_parallel.num_shares(x), lambda: 0])[0] == 1
    monkeypatch.setattr(blas, "owning", lambda: False)
    assert data_parallel.num_shares(x) == 1


@pytest.mark.parametrize("use_workspace", [False, True])
def test_shares_give_the_whole_batch_gradient(use_workspace):
    """Backward is linear in dlogits: the shares' gradients sum to the batch's (float64)."""
    params = init_params(CFG, dtype="float64", zero_head=False)
    ws = Workspace() if use_workspace else None
    for seed in (0, 1):                          # a second step reuses the share workspaces
        x, y = batch(21, seed)
        logits, loss, grads = data_parallel.forward_backward(SPEC, params, x, y, CFG, 0.1,
                                                             None, ws)
        want_logits, want_loss, want = whole_batch(params, x, y)
        np.testing.assert_allclose(logits, want_logits, rtol=1e-12, atol=1e-12)
        assert abs(float(loss) - float(want_loss)) < 1e-12
        assert grads.keys() == want.keys()
        for k in want:
            np.testing.assert_allclose(grads[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)
    if use_workspace:
        assert len(ws.shares(2)) == 2 and ws.nbytes() > 0


def test_dropout_shares_are_reproducible():
    cfg = CFG.replace(dropout=0.2, drop_path=0.1)
    params = init_params(cfg, dtype="float64", zero_head=False)
    x, y = batch(24)
    runs = [data_parallel.forward_backward(SPEC, params, x, y, cfg, 0.0,
                                           np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for k in runs[0][2]:
        np.testing.assert_array_equal(runs[0][2][k], runs[1][2][k])
    eval_logits = SPEC.forward(params, x, cfg, False, None, {})[0]
    assert not np.allclose(runs[0][0], eval_logits)                 # dropout did act
    r0, r1 = data_parallel.share_rngs(np.random.default_rng(7), 2)
    assert r0.random() != r1.random()                               # each share its own masks


def test_eval_forward_and_predict_match_the_whole_batch():
    params = init_params(CFG, dtype="float64", zero_head=False)
    x, _ = batch(40)
    want = SPEC.forward(params, x, CFG, False, None, {})[0]
    np.testing.assert_allclose(data_parallel.forward(SPEC, params, x, CFG), want,
                               rtol=1e-12, atol=1e-12)
    probs = predict_probs(params, x, CFG, batch_size=32, workspace=Workspace())
    e = np.exp(want - want.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(axis=1, keepdims=True), rtol=1e-12, atol=1e-14)


def test_train_step_takes_the_split_path(monkeypatch):
    calls = []
    real = data_parallel.forward_backward

    def spy(*args, **kwargs):
        calls.append(args[2].shape[0])
        return real(*args, **kwargs)
    monkeypatch.setattr(data_parallel, "forward_backward", spy)
    params = init_params(CFG, dtype="float32")
    x, y = batch(32, dtype="float32")
    tc = TrainConfig(batch_size=32, dtype="float32")
    loss, correct = train_module.train_step(params, adamw_init(params), x, y, CFG, tc, 1e-3,
                                            np.random.default_rng(0))
    assert calls == [32] and np.isfinite(loss) and 0 <= correct <= 32


def test_fp16_and_batchnorm_steps_stay_whole(monkeypatch):
    from minivit.models import MODELS
    from minivit.precision import new_loss_scale
    monkeypatch.setattr(data_parallel, "forward_backward",
                        lambda *a, **k: pytest.fail("split an fp16 or BatchNorm step"))
    params = init_params(CFG, dtype="float32")
    x, y = batch(32, dtype="float32")
    tc = TrainConfig(batch_size=32, precision="fp16")
    train_module.train_step(params, adamw_init(params), x, y, CFG, tc, 1e-3,
                            np.random.default_rng(0), loss_scale=new_loss_scale("fp16"))
    hybrid = MODELS["hybrid"]
    assert data_parallel.num_shares(x, hybrid.init_state(hybrid.cifar(), "float32")) == 1


def test_share_errors_propagate():
    def boom():
        raise ValueError("share failed")
    with pytest.raises(ValueError, match="share failed"):
        parallel.run_shares([lambda: 1, boom])
    assert parallel.run_shares([lambda: 1, lambda: 2]) == [1, 2]
    with pytest.raises(ValueError, match="3 shares for 2 threads"):
        parallel.run_shares([lambda: 1] * 3)
