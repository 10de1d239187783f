"""CMT parameter and BatchNorm-buffer shapes (the official state_dict's names), counts and
initialisation. The model allocates exactly these shapes, so the counts are the model's.

Layouts: convolutions (C_out, C_in / groups, k, k) as PyTorch; linear layers (in, out) as the
rest of minivit (PyTorch's transposed); relative_pos_{a..d}: B (heads, N, N / k^2)."""
import math

import numpy as np

from .. import backend
from ..conv.unit import init_bn_state
from .config import STAGES, CMTConfig


def _conv(name, c_out, c_in, k, bias=True):
    return {name + "weight": (c_out, c_in, k, k), **({name + "bias": (c_out,)} if bias else {})}


def _affine(name, c):
    """A norm's per-channel scale and shift (BatchNorm2d or LayerNorm)."""
    return {name + "weight": (c,), name + "bias": (c,)}


def _linear(name, n_in, n_out):
    return {name + "weight": (n_in, n_out), name + "bias": (n_out,)}


def block_shapes(D, hidden, sr):
    """One CMT block: LPU, LN, LMHSA (q, k, v, proj; a k x k depthwise conv + BN when k > 1),
    LN, IRFFN (1x1 conv + BN, 3x3 depthwise + BN, 1x1 conv + BN)."""
    s = {**_conv("proj.", D, 1, 3), **_affine("norm1.", D)}
    for lin in ("q", "k", "v", "proj"):
        s.update(_linear(f"attn.{lin}.", D, D))
    if sr > 1:
        s.update({**_conv("attn.sr.0.", D, 1, sr), **_affine("attn.sr.1.", D)})
    s.update({**_affine("norm2.", D), **_conv("mlp.conv1.0.", hidden, D, 1),
              **_affine("mlp.conv1.2.", hidden),
              **_conv("mlp.proj.", hidden, 1, 3), **_affine("mlp.proj_bn.", hidden),
              **_conv("mlp.conv2.0.", D, hidden, 1), **_affine("mlp.conv2.1.", D)})
    return s


def bn_names(shapes):
    """The BatchNorm prefixes among the parameter names (those whose buffers `state` keeps)."""
    bn = ("stem_norm", "sr.1.", "conv1.2.", "proj_bn.", "conv2.1.", "_bn.")
    return [k[:-len("weight")] for k in shapes if k.endswith("weight") and
            any(t in k for t in bn)]


def cmt_param_shapes(cfg: CMTConfig) -> dict:
    s, c_in, S = {}, cfg.in_channels, cfg.stem_channel
    for i in (1, 2, 3):
        s.update({**_conv(f"stem_conv{i}.", S, c_in, 3), **_affine(f"stem_norm{i}.", S)})
        c_in = S
    for i, L in enumerate(STAGES):
        D = cfg.embed_dims[i]
        s.update({**_conv(f"patch_embed_{L}.proj.", D, c_in, 2),
                  **_affine(f"patch_embed_{L}.norm.", D),
                  f"relative_pos_{L}": (cfg.num_heads[i], cfg.num_tokens(i), cfg.num_keys(i))})
        for j in range(cfg.depths[i]):
            s.update({f"blocks_{L}.{j}.{k}": v for k, v in
                      block_shapes(D, cfg.hidden_dim(i), cfg.sr_ratios[i]).items()})
        c_in = D
    s.update({**_conv("_fc.", cfg.fc_dim, c_in, 1), **_affine("_bn.", cfg.fc_dim),
              **_linear("head.", cfg.fc_dim, cfg.num_classes)})
    return s


def cmt_state_shapes(cfg: CMTConfig) -> dict:
    shapes = cmt_param_shapes(cfg)
    return {n + b: shapes[n + "weight"] for n in bn_names(shapes)
            for b in ("running_mean", "running_var")}


def count_cmt_params(cfg: CMTConfig) -> int:
    """Parameters (not buffers), from the shapes alone: nothing is allocated."""
    return sum(math.prod(v) for v in cmt_param_shapes(cfg).values())


def _init_one(name, shape, rng, bn):
    if name.startswith("relative_pos_"):
        return rng.standard_normal(shape)                              # torch.randn
    if len(shape) == 4:                                                # kaiming normal, fan_out
        return rng.normal(0.0, math.sqrt(2.0 / (shape[0] * shape[2] * shape[3])), shape)
    if len(shape) == 2:                                                # trunc_normal(std .02)
        return np.clip(rng.normal(0.0, 0.02, shape), -2.0, 2.0)
    is_scale = name.endswith("weight") and (name[:-len("weight")] in bn or "norm" in name)
    return np.ones(shape) if is_scale else np.zeros(shape)             # LN/BN 1, biases 0


def init_cmt_params(cfg: CMTConfig, seed=0, dtype="float32") -> dict:
    """The official _init_weights, drawn on the host from `seed`."""
    rng = np.random.default_rng(seed)
    shapes = cmt_param_shapes(cfg)
    bn = set(bn_names(shapes))
    return {k: backend.to_device(_init_one(k, s, rng, bn).astype(dtype)) for k, s in shapes.items()}


def init_cmt_state(cfg: CMTConfig, dtype="float32") -> dict:
    return init_bn_state(cmt_state_shapes(cfg), dtype)
