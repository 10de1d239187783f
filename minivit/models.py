"""The model registry: a name -> everything training needs to build, run, count and save a
model, so the training loop never names one. Every model has the same interface:

    cfg = spec.cifar(**overrides)                  the CIFAR-10 default config, overridden
    params = spec.init(cfg, seed, dtype)           trainable arrays (the optimiser's)
    state = spec.init_state(cfg, dtype)            BatchNorm running statistics ({} for ViT)
    logits, cache = spec.forward(params, images, cfg, train, rng, state, workspace=None)
    dimages, grads = spec.backward(dlogits, cache, input_grad=True)

(`workspace` and `input_grad=False` are speed options the ViT uses; BN models ignore them.)

`state` holds buffers, not parameters: the forward updates them in place when train=True and
reads them when train=False, so a training loop only has to keep them next to `params`, save
them in checkpoints and pass them to evaluation.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import data_parallel
from .backend import get_array_module
from .blas import owns_threads
from .cmt import (
    CMTConfig,
    cmt_backward,
    cmt_cifar,
    cmt_forward,
    count_cmt_params,
    init_cmt_params,
    init_cmt_state,
)
from .config import ViTConfig
from .hybrid import (
    HybridConfig,
    count_hybrid_params,
    hybrid_backward,
    hybrid_forward,
    init_hybrid_params,
    init_hybrid_state,
)
from .layers.attention import softmax_forward
from .model import vit_backward, vit_forward
from .params import count_params, init_params


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config_class: type
    cifar: Callable
    init: Callable
    init_state: Callable
    forward: Callable
    backward: Callable
    count: Callable

    def from_dict(self, d: dict):
        return self.config_class.from_dict(d)


def _vit_forward(params, images, cfg, train=False, rng=None, state=None, workspace=None):
    return vit_forward(params, images, cfg, train=train, rng=rng, workspace=workspace,
                       all_tokens=False)             # the class token alone in the last block


def _vit_backward(dlogits, cache, input_grad=True):
    return vit_backward(dlogits, cache, input_grad=input_grad)


def _without_workspace(forward, backward):
    """Forward/backward of a model that has no Workspace or input_grad option (BN models)."""
    def fw(params, images, cfg, train=False, rng=None, state=None, workspace=None):
        return forward(params, images, cfg, train, rng, state)

    def bw(dlogits, cache, input_grad=True):
        return backward(dlogits, cache)
    return fw, bw


MODELS = {
    "vit": ModelSpec("vit", ViTConfig, ViTConfig.cifar,
                     lambda cfg, seed, dtype: init_params(cfg, seed=seed, dtype=dtype),
                     lambda cfg, dtype: {}, _vit_forward, _vit_backward, count_params),
    "hybrid": ModelSpec("hybrid", HybridConfig, HybridConfig,
                        lambda cfg, seed, dtype: init_hybrid_params(cfg, seed=seed, dtype=dtype),
                        init_hybrid_state, *_without_workspace(hybrid_forward, hybrid_backward),
                        count_hybrid_params),
    "cmt": ModelSpec("cmt", CMTConfig, cmt_cifar,
                     lambda cfg, seed, dtype: init_cmt_params(cfg, seed=seed, dtype=dtype),
                     init_cmt_state, *_without_workspace(cmt_forward, cmt_backward),
                     count_cmt_params),
}


def get_model(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose from {', '.join(MODELS)}")
    return MODELS[name]


def model_shapes(cfg) -> dict:
    """{name: shape} of the trainable parameters of cfg's model (from a fresh init)."""
    params = get_model(model_name(cfg)).init(cfg, 0, "float32")
    return {k: tuple(v.shape) for k, v in params.items()}


def model_name(cfg) -> str:
    """The registry name of a config object."""
    for name, spec in MODELS.items():
        if type(cfg) is spec.config_class:
            return name
    raise ValueError(f"no registered model has config type {type(cfg).__name__}")


def batchnorm_params(state) -> set:
    """The BatchNorm scales and shifts of a model, named from its running statistics in
    `state` ("x.running_mean" -> "x.weight", "x.bias"): optimisers do not decay them."""
    prefixes = [k[:-len("running_mean")] for k in (state or {}) if k.endswith("running_mean")]
    return {p + w for p in prefixes for w in ("weight", "bias")}


@owns_threads
def predict_probs(params, images, cfg, state=None, batch_size=256, workspace=None):
    """images (B, C, H, W) -> class probabilities (B, K) in eval mode (BN: running stats).
    workspace: a Workspace whose buffers every batch reuses (fresh large arrays for each batch
    cost page faults: ~20 s instead of ~13 s for 5,000 CIFAR images on 2 cores,
    benchmarks/bench_eval.py). Each batch runs as one share per thread where it can
    (minivit/data_parallel.py)."""
    spec = get_model(model_name(cfg))
    xp = get_array_module(images)
    out = [softmax_forward(data_parallel.forward(spec, params, images[s:s + batch_size], cfg,
                                                 state, workspace))
           for s in range(0, images.shape[0], batch_size)]
    return xp.concatenate(out) if out else xp.zeros((0, cfg.num_classes), images.dtype)
