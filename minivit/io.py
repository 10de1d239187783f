"""Converting between minivit's parameter layout and timm's VisionTransformer state_dict.

minivit stores linear weights (in, out), as the paper writes x W; timm/PyTorch store (out, in).
The patch embedding E (P^2 C, D) is timm's conv weight (D, C, P, P) reshaped: patches are
flattened in (c, i, j) order, so E = w.reshape(D, C*P*P).T.
"""
import numpy as np

from .backend import to_device, to_numpy
from .config import ViTConfig
from .params import param_shapes


def _is_linear_weight(name):
    return name.endswith(".weight") and name.split(".")[-2] in ("qkv", "proj", "fc1", "fc2", "head")


def to_timm_state_dict(params, in_channels=3) -> dict:
    """minivit params -> dict of host NumPy arrays in timm's names and layouts.

    E (P^2 C, D) becomes patch_embed.proj.weight (D, C, P, P), with P = sqrt(rows / C)."""
    out = {}
    for name, v in params.items():
        a = to_numpy(v)
        if name == "patch_embed.weight":
            PPC, D = a.shape
            P = int(round((PPC // in_channels) ** 0.5))
            if P * P * in_channels != PPC:
                raise ValueError(f"patch_embed.weight has {PPC} rows: not P*P*{in_channels}")
            out["patch_embed.proj.weight"] = a.T.reshape(D, in_channels, P, P)
        elif name == "patch_embed.bias":
            out["patch_embed.proj.bias"] = a
        else:
            out[name] = a.T if _is_linear_weight(name) else a
    return out


def from_timm_state_dict(state_dict, cfg: ViTConfig, dtype=None) -> dict:
    """timm state_dict (NumPy arrays, or tensors via .numpy()) -> minivit params for cfg.

    Raises ValueError naming any missing key or mismatched shape."""
    shapes = param_shapes(cfg)
    params = {}
    for name, shape in shapes.items():
        key = {"patch_embed.weight": "patch_embed.proj.weight",
               "patch_embed.bias": "patch_embed.proj.bias"}.get(name, name)
        if key not in state_dict:
            raise ValueError(f"state_dict has no {key!r} (needed for {name})")
        a = state_dict[key]
        a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
        if name == "patch_embed.weight":
            a = a.reshape(a.shape[0], -1).T                       # (D, C, P, P) -> (P^2 C, D)
        elif _is_linear_weight(name):
            a = a.T
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"{key}: expected shape {shape} for this config, got {a.shape}")
        params[name] = to_device(a, dtype=dtype or a.dtype)
    return params
