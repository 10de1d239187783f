"""Parameter shapes, counts and initialisation. Names follow timm's VisionTransformer
state_dict, except patch_embed.weight, stored as the paper's E (P^2 C, D)."""
import math

import numpy as np

from . import backend
from .config import ViTConfig
from .layers.posembed import rel_table_size


def param_shapes(cfg: ViTConfig) -> dict:
    """name -> shape of every parameter, in model order. init_params allocates exactly these."""
    D, M, K = cfg.dim, cfg.mlp_dim, cfg.num_classes
    s = {"patch_embed.weight": (cfg.patch_dim, D), "patch_embed.bias": (D,)}
    if cfg.pool == "cls":
        s["cls_token"] = (1, 1, D)
    (h, w), pe = cfg.grid, cfg.pos_embed
    if pe == "1d":
        s["pos_embed"] = (1, cfg.num_tokens, D)
    elif pe == "2d":                                            # App. D.4: X_i, Y_j of D/2
        s["pos_embed_row"], s["pos_embed_col"] = (h, D // 2), (w, D // 2)
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        s.update({b + "norm1.weight": (D,), b + "norm1.bias": (D,),
                  b + "attn.qkv.weight": (D, 3 * D), b + "attn.qkv.bias": (3 * D,),
                  b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
                  b + "norm2.weight": (D,), b + "norm2.bias": (D,),
                  b + "mlp.fc1.weight": (D, M), b + "mlp.fc1.bias": (M,),
                  b + "mlp.fc2.weight": (M, D), b + "mlp.fc2.bias": (D,)})
        if pe == "rel":                                         # one row per 2-D offset
            s[b + "attn.rel_pos"] = (rel_table_size(cfg), D)
    s.update({"norm.weight": (D,), "norm.bias": (D,), "head.weight": (D, K), "head.bias": (K,)})
    return s


def count_params(cfg: ViTConfig) -> int:
    """The number of parameters, from the shapes alone (nothing is allocated)."""
    return sum(math.prod(shape) for shape in param_shapes(cfg).values())


def _init_one(name, shape, rng, zero_head):
    if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
        return np.ones(shape)
    if name.startswith("pos_embed") or name.endswith("rel_pos"):
        return rng.normal(0.0, 0.02, shape)                     # N(0, 0.02)
    if name == "cls_token" or name.endswith("bias") or (name == "head.weight" and zero_head):
        return np.zeros(shape)
    fan_in, fan_out = shape                                     # xavier-uniform for (in, out)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape)


def init_params(cfg: ViTConfig, seed=0, dtype="float32", zero_head=True) -> dict:
    """A dict name -> backend array: xavier-uniform weights, zero biases, unit LN scales,
    E_pos ~ N(0, 0.02), a zero class token and (as the reference) a zero head.

    Drawn on the host with NumPy from `seed`, so the same seed gives the same weights on
    every backend. With zero_head the first step's gradients are zero except the head's."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a float type, got {dtype}")
    rng = np.random.default_rng(seed)
    return {name: backend.to_device(_init_one(name, shape, rng, zero_head).astype(dtype))
            for name, shape in param_shapes(cfg).items()}
