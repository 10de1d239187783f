"""Loading the official google-research `vision_transformer` / big_vision checkpoints (.npz).

Layouts (Flax names; kernels stored (in, out) like minivit):
  vision_transformer:  [opt/target/]embedding/kernel (P, P, C, D) HWIO, embedding/bias, cls,
    Transformer/posembed_input/pos_embedding (1, T, D), Transformer/encoder_norm/{scale,bias},
    head/{kernel,bias}, and per block Transformer/encoderblock_{i}/ with
    LayerNorm_0, MultiHeadDotProductAttention_1/{query,key,value}/kernel (D, heads, D_h),
    .../bias (heads, D_h), .../out/kernel (heads, D_h, D), LayerNorm_2, MlpBlock_3/Dense_{0,1}.
  big_vision:  params/embedding/..., params/cls, params/pos_embedding, and blocks as
    Transformer/encoderblock/ with every array stacked on a leading depth axis (scan), or
    encoderblock_{i}/; there the sub-modules are LayerNorm_0, MultiHeadDotProductAttention_0,
    LayerNorm_1, MlpBlock_0.
The reference model uses the tanh-approximate GELU (Flax's default) and LayerNorm eps 1e-6, so
the returned config has gelu="tanh", ln_eps=1e-6.
"""
import zipfile

import numpy as np

from ..backend import to_device
from ..config import ViTConfig
from .resize import resize_pos_embed

PREFIXES = ("opt/target/", "params/img/", "params/", "")


def read_npz(path):
    """An .npz as a dict of arrays, without pickle; a clear error for a bad file."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz checkpoint ({e})") from e


class _Layout:
    """Key names of one checkpoint: prefix, block naming and sub-module numbers."""

    def __init__(self, w):
        self.w = w
        self.prefix = next((p for p in PREFIXES if f"{p}embedding/kernel" in w), None)
        if self.prefix is None:
            raise ValueError("not a vision_transformer checkpoint: no embedding/kernel under "
                             f"any of the prefixes {PREFIXES}")
        t = self.prefix + "Transformer/"
        self.stacked = f"{t}encoderblock/LayerNorm_0/scale" in w
        blk = f"{t}encoderblock/" if self.stacked else f"{t}encoderblock_0/"
        big = f"{blk}MultiHeadDotProductAttention_0/query/kernel" in w
        self.mha, self.mlp, self.ln2 = (0, 0, 1) if big else (1, 3, 2)
        if self.stacked:
            self.depth = w[f"{t}encoderblock/LayerNorm_0/scale"].shape[0]
        else:
            self.depth = 0
            while f"{t}encoderblock_{self.depth}/LayerNorm_0/scale" in w:
                self.depth += 1
        pos = [f"{t}posembed_input/pos_embedding", f"{self.prefix}pos_embedding"]
        self.pos_key = next((k for k in pos if k in w), pos[0])

    def get(self, name):
        key = self.prefix + name
        if key not in self.w:
            raise ValueError(f"checkpoint has no {key!r}")
        return self.w[key]

    def block(self, i, name):
        """Block i's array `name` (e.g. "LayerNorm_0/scale"), sliced out of a stacked one."""
        if self.stacked:
            return self.get(f"Transformer/encoderblock/{name}")[i]
        return self.get(f"Transformer/encoderblock_{i}/{name}")


def _block_params(L, i):
    D = L.get("embedding/kernel").shape[-1]
    mha, mlp = f"MultiHeadDotProductAttention_{L.mha}/", f"MlpBlock_{L.mlp}/"
    qkv = [L.block(i, f"{mha}{n}/kernel").reshape(D, D) for n in ("query", "key", "value")]
    qkv_b = [L.block(i, f"{mha}{n}/bias").reshape(D) for n in ("query", "key", "value")]
    b = f"blocks.{i}."
    return {b + "norm1.weight": L.block(i, "LayerNorm_0/scale"),
            b + "norm1.bias": L.block(i, "LayerNorm_0/bias"),
            b + "attn.qkv.weight": np.concatenate(qkv, axis=1),          # (D, 3D) = [Q|K|V]
            b + "attn.qkv.bias": np.concatenate(qkv_b),
            b + "attn.proj.weight": L.block(i, f"{mha}out/kernel").reshape(D, D),
            b + "attn.proj.bias": L.block(i, f"{mha}out/bias"),
            b + "norm2.weight": L.block(i, f"LayerNorm_{L.ln2}/scale"),
            b + "norm2.bias": L.block(i, f"LayerNorm_{L.ln2}/bias"),
            b + "mlp.fc1.weight": L.block(i, f"{mlp}Dense_0/kernel"),
            b + "mlp.fc1.bias": L.block(i, f"{mlp}Dense_0/bias"),
            b + "mlp.fc2.weight": L.block(i, f"{mlp}Dense_1/kernel"),
            b + "mlp.fc2.bias": L.block(i, f"{mlp}Dense_1/bias")}


def _config(L, image_size):
    P, _, C, D = L.get("embedding/kernel").shape
    has_cls = f"{L.prefix}cls" in L.w
    T = L.w[L.pos_key].shape[1] if L.pos_key in L.w else None
    gs = int(round((T - has_cls) ** 0.5)) if T else None
    if T and gs * gs != T - has_cls:
        raise ValueError(f"pos_embedding has {T} rows: not a square grid (+1 class token)")
    heads = L.block(0, f"MultiHeadDotProductAttention_{L.mha}/query/kernel").shape[1]
    mlp_dim = L.block(0, f"MlpBlock_{L.mlp}/Dense_0/kernel").shape[1]
    K = L.w[f"{L.prefix}head/kernel"].shape[1] if f"{L.prefix}head/kernel" in L.w else 1
    cfg = ViTConfig(image_size=gs * P, patch_size=P, in_channels=C, num_classes=K, dim=D,
                    depth=L.depth, heads=heads, mlp_dim=mlp_dim,
                    pool="cls" if has_cls else "gap", gelu="tanh", ln_eps=1e-6)
    return cfg, (cfg if image_size is None else cfg.replace(image_size=image_size))


def load_official(source, image_size=None, num_classes=None, resize_mode="bilinear",
                  dtype="float32"):
    """An official .npz (path or dict of arrays) -> (minivit params, ViTConfig).

    image_size: run at another resolution; E_pos is resized to the new patch grid
    (resize_mode "bilinear" = corner-aligned as the official code, or "bicubic" as timm).
    num_classes: a new task; the head is replaced by a zero-initialised D x K layer (the
    paper's fine-tuning; any pre_logits representation layer is dropped with the old head).
    """
    w = read_npz(source) if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__") \
        else dict(source)
    L = _Layout(w)
    cfg_ckpt, cfg = _config(L, image_size)
    kernel = L.get("embedding/kernel")                                # (P, P, C, D)
    P, _, C, D = kernel.shape
    p = {"patch_embed.weight": kernel.transpose(2, 0, 1, 3).reshape(C * P * P, D),  # (c,i,j)
         "patch_embed.bias": L.get("embedding/bias")}
    if cfg.pool == "cls":
        p["cls_token"] = L.get("cls").reshape(1, 1, D)
    pos = L.w[L.pos_key].reshape(1, -1, D)
    if cfg.hw != cfg_ckpt.hw:
        pos = resize_pos_embed(pos, cfg_ckpt.grid, cfg.grid, int(cfg.pool == "cls"), resize_mode)
    p["pos_embed"] = pos
    for i in range(L.depth):
        p.update(_block_params(L, i))
    p["norm.weight"] = L.get("Transformer/encoder_norm/scale")
    p["norm.bias"] = L.get("Transformer/encoder_norm/bias")
    if num_classes is not None and (num_classes != cfg.num_classes
                                    or f"{L.prefix}head/kernel" not in L.w):
        cfg = cfg.replace(num_classes=num_classes)
        p["head.weight"], p["head.bias"] = np.zeros((D, num_classes)), np.zeros(num_classes)
    else:
        if f"{L.prefix}pre_logits/kernel" in L.w:
            raise ValueError("checkpoint has a pre_logits (representation) layer, which minivit "
                             "does not model: pass num_classes to replace the head")
        p["head.weight"], p["head.bias"] = L.get("head/kernel"), L.get("head/bias")
    return {k: to_device(np.asarray(v), dtype=dtype) for k, v in p.items()}, cfg
