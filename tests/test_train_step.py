"""train_step is the five calls and nothing else: forward, loss, backward, clip, update. The same
step written out by hand gives the same parameters, with the clip biting (a norm far below the
gradients'), weight decay on (BatchNorm scales and shifts exempt), for AdamW and for SGD."""
import numpy as np
import pytest
from test_cmt import TINY as CMT_TINY
from test_hybrid import TINY as HYBRID_TINY
from test_train import TC, TINY

from minivit import ViTConfig
from minivit.backend import default_rng
from minivit.layers import cross_entropy
from minivit.models import batchnorm_params, get_model, model_name
from minivit.optim import adamw_init, adamw_step, clip_grad_norm, global_norm, sgd_init, sgd_step
from minivit.train import build_model, build_state, train_step

CONFIGS = {"vit": TINY, "hybrid": HYBRID_TINY, "cmt": CMT_TINY}
CLIP = 1e-3                       # far below the gradients' norm: the clip changes the step


def by_hand(params, state, opt, x, y, cfg, tc, lr):
    """The five calls, in float64, where train_step runs the batch whole."""
    spec = get_model(model_name(cfg))
    logits, cache = spec.forward(params, x, cfg, True, default_rng(0), state)     # 1 forward
    _, dlogits = cross_entropy(logits, y, tc.label_smoothing)                    # 2 loss
    _, grads = spec.backward(dlogits, cache, input_grad=False)                    # 3 backward
    assert float(global_norm(grads)) > 100 * CLIP
    clip_grad_norm(grads, CLIP)                                                   # 4 clip
    no_decay = batchnorm_params(state)                                            # 5 update
    if tc.optimizer == "adamw":
        adamw_step(params, grads, opt, lr, weight_decay=tc.weight_decay, no_decay=no_decay)
    else:
        sgd_step(params, grads, opt, lr, momentum=0.9, nesterov=True,
                 weight_decay=tc.weight_decay, no_decay=no_decay)


@pytest.mark.parametrize("name, optimizer", [("vit", "adamw"), ("vit", "sgd"),
                                             ("hybrid", "adamw"), ("cmt", "sgd")])
def test_train_step_is_the_step_by_hand(name, optimizer):
    cfg = CONFIGS[name]
    tc = TC.replace(optimizer=optimizer, clip_norm=CLIP, weight_decay=0.5, label_smoothing=0.1,
                    dtype="float64")
    H, W = (cfg.hw if isinstance(cfg, ViTConfig) else (cfg.image_size,) * 2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, H, W))
    y = rng.integers(0, cfg.num_classes, 6)
    init = adamw_init if optimizer == "adamw" else sgd_init
    runs = []
    for step in ("train_step", "by hand"):
        params, state = build_model(cfg, 0, "float64"), build_state(cfg, "float64")
        noise = np.random.default_rng(1)               # non-zero head, the same for both
        params = {k: v + noise.normal(0, 0.05, v.shape) for k, v in params.items()}
        opt = init(params)
        for lr in (3e-2, 1e-2):                        # a second step: momentum and moments
            if step == "train_step":
                train_step(params, opt, x, y, cfg, tc, lr, default_rng(0), state=state)
            else:
                by_hand(params, state, opt, x, y, cfg, tc, lr)
        runs.append((params, state))
    (p1, s1), (p2, s2) = runs
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-9, atol=1e-12, err_msg=k)
    for k in s1:
        np.testing.assert_allclose(s1[k], s2[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_drop_path_rate_rises_linearly_from_zero():
    """Stochastic depth as DeiT/timm: block l of L drops its branches with rate r l / (L - 1)."""
    np.testing.assert_allclose(TINY.replace(depth=5, drop_path=0.2).drop_path_rates(),
                               [0.0, 0.05, 0.1, 0.15, 0.2])
    assert TINY.replace(depth=1, drop_path=0.2).drop_path_rates() == [0.0]
