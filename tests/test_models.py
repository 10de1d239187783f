"""The model registry: one interface for ViT, hybrid and CMT (config round trip through JSON,
init, forward/backward, BN state updated in training and only read in eval, predictions)."""
import json

import numpy as np
import pytest
from test_cmt import TINY as CMT_TINY
from test_hybrid import TINY as HYBRID_TINY

from minivit import ViTConfig
from minivit.backend import to_numpy
from minivit.models import MODELS, get_model, model_name, predict_probs

TINY = {"vit": ViTConfig(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2,
                         mlp_dim=8),
        "hybrid": HYBRID_TINY, "cmt": CMT_TINY}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_same_interface(name):
    spec, cfg = get_model(name), TINY[name]
    assert model_name(cfg) == name
    assert spec.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert spec.from_dict(json.loads(json.dumps(spec.cifar().to_dict()))) == spec.cifar()
    params, state = spec.init(cfg, 0, "float32"), spec.init_state(cfg, "float32")
    assert sum(v.size for v in params.values()) == spec.count(cfg)
    assert (name == "vit") == (not state)
    x = np.random.default_rng(0).standard_normal((4, 3, cfg.image_size if name != "vit" else 8,
                                                  cfg.image_size if name != "vit" else 8))
    x = x.astype(np.float32)
    before = {k: to_numpy(v).copy() for k, v in state.items()}
    logits, cache = spec.forward(params, x, cfg, True, None, state)
    dx, grads = spec.backward(np.ones_like(logits), cache)
    assert dx.shape == x.shape and set(grads) == set(params)
    assert all(not np.array_equal(to_numpy(state[k]), before[k]) for k in state)
    after = {k: to_numpy(v).copy() for k, v in state.items()}
    probs = to_numpy(predict_probs(params, x, cfg, state, batch_size=3))
    assert probs.shape == (4, cfg.num_classes) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert all(np.array_equal(to_numpy(state[k]), after[k]) for k in state)


def test_unknown_model():
    with pytest.raises(ValueError, match="choose from vit, hybrid, cmt"):
        get_model("resnet")
