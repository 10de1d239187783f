"""The hybrid ViT (Dosovitskiy et al. 2020, sec. 3.1 "Hybrid Architecture"): the input sequence
is a CNN feature map, each 1x1 "patch" of it one token, fed to the same encoder.

    F = stem(x):  conv3x3 s1 C -> 32, BN, ReLU;  conv3x3 s2 -> 64, BN, ReLU;
                  conv3x3 s2 -> 128, BN, ReLU                       (B, 128, 8, 8) for 32 px
    z_0 = [x_class; F_1 E; ...; F_64 E] + E_pos,  E in R^{128 x D}  (eq. 1 with P = 1)
    then eq. 2-4 unchanged.
The encoder part IS minivit's ViT (vit_forward / vit_backward) on the feature map with
patch size 1, so its parameters keep the ViT's names; the stem adds stem.{i}.conv / stem.{i}.bn.

Deviation from the paper: the paper's hybrids use a BiT ResNet stem, whose convolutions use
Group Normalisation with weight standardisation. This small CIFAR stem uses BatchNorm2d
(conv without bias, then BN, then ReLU), so it has running statistics: they live in a `state`
dict (see minivit/conv/batchnorm.py), updated in training and used in eval.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from . import backend
from .config import ViTConfig
from .conv.unit import conv_unit_backward, conv_unit_forward, init_bn_state
from .model import attention_maps, check_image_batch, vit_backward, vit_forward
from .params import init_params, param_shapes


@dataclass(frozen=True)
class HybridConfig:
    image_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    stem_channels: tuple = (32, 64, 128)
    stem_strides: tuple = (1, 2, 2)
    dim: int = 128
    depth: int = 6
    heads: int = 4
    mlp_dim: int = 512
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    pool: str = "cls"
    gelu: str = "none"
    ln_eps: float = 1e-6

    def __post_init__(self):
        object.__setattr__(self, "stem_channels", tuple(self.stem_channels))
        object.__setattr__(self, "stem_strides", tuple(self.stem_strides))
        if len(self.stem_channels) != len(self.stem_strides) or not self.stem_channels:
            raise ValueError("stem_channels and stem_strides need the same, non-zero length")
        self.vit  # noqa: B018 - validates the encoder fields

    @property
    def feature_size(self) -> int:
        """Side of the stem's output: each conv3x3 with padding 1 maps n -> (n - 1) // s + 1."""
        n = self.image_size
        for s in self.stem_strides:
            n = (n - 1) // s + 1
        return n

    @property
    def vit(self) -> ViTConfig:
        """The encoder: a ViT on the (feature_size)^2 map of stem_channels[-1] channels, P = 1."""
        return ViTConfig(image_size=self.feature_size, patch_size=1,
                         in_channels=self.stem_channels[-1], num_classes=self.num_classes,
                         dim=self.dim, depth=self.depth, heads=self.heads, mlp_dim=self.mlp_dim,
                         dropout=self.dropout, attn_dropout=self.attn_dropout,
                         drop_path=self.drop_path, pool=self.pool, gelu=self.gelu,
                         ln_eps=self.ln_eps)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {**d, "stem_channels": list(self.stem_channels),
                "stem_strides": list(self.stem_strides)}

    @classmethod
    def from_dict(cls, d: dict) -> HybridConfig:
        return cls(**d)

    def replace(self, **changes) -> HybridConfig:
        return dataclasses.replace(self, **changes)


def _stem_layers(cfg: HybridConfig):
    c_in = cfg.in_channels
    for i, (c_out, s) in enumerate(zip(cfg.stem_channels, cfg.stem_strides, strict=True)):
        yield f"stem.{i}.", c_in, c_out, s
        c_in = c_out


def hybrid_param_shapes(cfg: HybridConfig) -> dict:
    """name -> shape: the stem's conv (C_out, C_in, 3, 3) and BN (C_out,), then the ViT's."""
    s = {}
    for name, c_in, c_out, _ in _stem_layers(cfg):
        s.update({name + "conv.weight": (c_out, c_in, 3, 3), name + "bn.weight": (c_out,),
                  name + "bn.bias": (c_out,)})
    return {**s, **param_shapes(cfg.vit)}


def hybrid_state_shapes(cfg: HybridConfig) -> dict:
    """name -> shape of the BatchNorm buffers (running mean and variance)."""
    return {name + "bn." + b: (c_out,) for name, _, c_out, _ in _stem_layers(cfg)
            for b in ("running_mean", "running_var")}


def count_hybrid_params(cfg: HybridConfig) -> int:
    return sum(math.prod(s) for s in hybrid_param_shapes(cfg).values())


def init_hybrid_params(cfg: HybridConfig, seed=0, dtype="float32", zero_head=True) -> dict:
    """The stem: Kaiming-normal convs (fan_out, as torchvision's ResNet), BN gamma 1, beta 0;
    the encoder: minivit's init_params for cfg.vit."""
    rng = np.random.default_rng([seed, 1])
    p = {}
    for name, c_in, c_out, _ in _stem_layers(cfg):
        w = rng.normal(0.0, math.sqrt(2.0 / (c_out * 9)), (c_out, c_in, 3, 3))
        p[name + "conv.weight"] = backend.to_device(w.astype(dtype))
        p[name + "bn.weight"] = backend.to_device(np.ones(c_out, dtype))
        p[name + "bn.bias"] = backend.to_device(np.zeros(c_out, dtype))
    return {**p, **init_params(cfg.vit, seed=seed, dtype=dtype, zero_head=zero_head)}


def init_hybrid_state(cfg: HybridConfig, dtype="float32") -> dict:
    return init_bn_state(hybrid_state_shapes(cfg), dtype)


def hybrid_forward(params, images, cfg: HybridConfig, train=False, rng=None, state=None):
    """images (B, C, H, W) -> logits (B, K), cache. `state` holds the stem's BN running stats
    (updated in place when train=True, read when train=False)."""
    check_image_batch(images, cfg.in_channels, cfg.image_size)
    x, c_stem = images, []
    for name, _, _, s in _stem_layers(cfg):
        x, c = conv_unit_forward(x, params, state, name + "conv.", name + "bn.", stride=s,
                                 padding=1, act="relu", train=train)
        c_stem.append(c)                                              # F: (B, 128, 8, 8)
    logits, c_vit = vit_forward(params, x, cfg.vit, train=train, rng=rng)
    return logits, {"stem": c_stem, "vit": c_vit}


def hybrid_backward(dlogits, cache):
    """dlogits (B, K) -> (dimages, grads for every parameter)."""
    dx, grads = vit_backward(dlogits, cache["vit"])
    for c in reversed(cache["stem"]):
        dx, g = conv_unit_backward(dx, c)
        grads.update(g)
    return dx, grads


def hybrid_attention_maps(cache):
    return attention_maps(cache["vit"])
