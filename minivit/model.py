"""The Vision Transformer, forward and backward, as flat ordered lists of layer calls.

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos                             (eq. 1)
    z'_l = MSA(LN(z_{l-1})) + z_{l-1},  z_l = MLP(LN(z'_l)) + z'_l,  l = 1..L    (eq. 2-3)
    y = LN(z_L^0)  (pool="gap": mean of LN(z_L) over the tokens),  logits = y W_head   (eq. 4)
"""
from .backend import get_array_module
from .blas import owns_threads
from .config import ViTConfig
from .layers.block import add_prefix, attention_probs, block_backward, block_forward, sub_params
from .layers.dropout import drop_path_masks, dropout_backward, dropout_forward
from .layers.layernorm import layernorm_backward, layernorm_forward
from .layers.linear import linear_backward, linear_forward
from .layers.patch import (
    embed_tokens_backward,
    embed_tokens_forward,
    patch_embed_backward,
    patch_embed_forward,
)
from .layers.posembed import add_rel_grads, pos_embed_backward, pos_embed_forward, rel_bias_forward
from .workspace import StaleCacheError


def check_image_batch(images, in_channels, hw, patch_size=None):
    """Raise ValueError unless images is a float (B, in_channels, H, W) array with (H, W) = hw
    (and, with patch_size, H and W divisible by it: said first, it is the likelier mistake)."""
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(f"images must be a 4-D (B, C, H, W) array, got shape {shape}")
    if images.dtype.kind != "f":
        raise ValueError(f"images must be floating point, got dtype {images.dtype}")
    _, C, H, W = shape
    if patch_size and (H % patch_size or W % patch_size):
        raise ValueError(f"image size {H}x{W} is not divisible by the patch size {patch_size}")
    hw = (hw, hw) if isinstance(hw, int) else tuple(hw)
    if (C, H, W) != (in_channels, *hw):
        raise ValueError(f"images must be (B, {in_channels}, {hw[0]}, {hw[1]}) for this config, "
                         f"got {tuple(shape)}")


def check_images(images, cfg: ViTConfig):
    """check_image_batch against a ViT config: its channels, image size and patch size."""
    check_image_batch(images, cfg.in_channels, cfg.hw, cfg.patch_size)


def head_forward(z, p, cfg: ViTConfig):
    """z_L (B, T, D) -> logits (B, K). cls: LN(z_L^0) W_head (eq. 4); gap: mean_t LN(z_L) W_head."""
    if cfg.pool == "cls":
        y, c_norm = layernorm_forward(z[:, 0], p["norm.weight"], p["norm.bias"], cfg.ln_eps)
    else:
        zn, c_norm = layernorm_forward(z, p["norm.weight"], p["norm.bias"], cfg.ln_eps)
        y = zn.mean(axis=1)                                                  # (B, D)
    logits, c_head = linear_forward(y, p["head.weight"], p["head.bias"])
    return logits, (c_norm, c_head, z.shape, cfg.pool)


def head_backward(dlogits, cache):
    """dlogits (B, K) -> (dz_L (B, T, D), grads of norm and head). dy = dlogits W_head^T (B, D);
    cls: dz_L^0 = LN'(dy), the other tokens get 0;  gap: dz_L = LN'(dy / T), for every token."""
    c_norm, c_head, z_shape, pool = cache
    xp = get_array_module(dlogits)
    dy, g_head = linear_backward(dlogits, c_head)                            # (B, D)
    if pool == "cls":
        dy0, g_norm = layernorm_backward(dy, c_norm)
        dz = xp.zeros(z_shape, dtype=dlogits.dtype)
        dz[:, 0] = dy0
    else:
        dzn = xp.broadcast_to(dy[:, None, :] / z_shape[1], z_shape)
        dz, g_norm = layernorm_backward(dzn, c_norm)
    return dz, {**add_prefix(g_norm, "norm."), **add_prefix(g_head, "head.")}


@owns_threads
def vit_forward(params, images, cfg: ViTConfig, train=False, rng=None, workspace=None,
                all_tokens=True):
    """images (B, C, H, W) -> logits (B, K), cache for vit_backward.

    With train=True and any dropout/drop-path rate > 0, `rng` (a backend generator) draws the
    masks. attention_maps(cache) gives each block's attention probabilities.
    workspace: a minivit.workspace.Workspace whose buffers hold the activations, reused from
    step to step (the cache is then valid until the next vit_forward with that workspace).
    all_tokens=False (what training and evaluation use): with pool="cls", eq. 4 reads only
    z_L^0, so the last block computes its output for the class token alone (its keys and
    values still come from every token). Same logits and gradients, 12.6% fewer matmul FLOPs
    for the CIFAR model (without dropout: with it, the masks drawn differ); the last attention
    map is then (B, heads, 1, T).
    """
    check_images(images, cfg)
    ws = workspace
    gen = ws.new_generation() if ws is not None else None
    p = params
    e, c_patch = patch_embed_forward(images, p["patch_embed.weight"], p["patch_embed.bias"],
                                     cfg.patch_size)                                  # (B, N, D)
    pos, c_pos = pos_embed_forward(p, cfg)                    # E_pos of cfg.pos_embed
    z, c_tok = embed_tokens_forward(e, p.get("cls_token"), pos)                       # (B, T, D)
    z, c_drop = dropout_forward(z, cfg.dropout, rng, train)
    c_blocks, c_rels, block_ws = [], [], []
    rates = cfg.drop_path_rates()
    masks = drop_path_masks(rng, z.shape[0], rates, z.dtype) if train else [None] * len(rates)
    for i, dp in enumerate(rates):
        bp = sub_params(p, f"blocks.{i}.")
        bias, c_rel = rel_bias_forward(z, bp, cfg)            # None unless pos_embed="rel"
        cls_only = (not all_tokens and cfg.pool == "cls" and bias is None
                    and i == cfg.depth - 1)                   # z_L for the class token alone
        block_ws.append(None if ws is None else ws.scope(f"blocks.{i}.", own_shared=cls_only))
        z, c = block_forward(z, bp, cfg.heads, eps=cfg.ln_eps,
                             dropout=cfg.dropout, attn_dropout=cfg.attn_dropout, drop_path=dp,
                             approximate=cfg.gelu, rng=rng, train=train, attn_bias=bias,
                             ws=block_ws[-1], queries=1 if cls_only else None,
                             path_masks=masks[i])
        c_blocks.append(c)
        c_rels.append(c_rel)
    logits, c_head = head_forward(z, p, cfg)                                          # (B, K)
    cache = {"cfg": cfg, "patch": c_patch, "pos": c_pos, "tokens": c_tok, "drop": c_drop,
             "blocks": c_blocks, "rel": c_rels, "head": c_head, "workspace": (ws, gen),
             "block_ws": block_ws}
    return logits, cache


@owns_threads
def vit_backward(dlogits, cache, input_grad=True):
    """dlogits (B, K) -> (dimages (B, C, H, W), grads: the same names and shapes as params).

    input_grad=False skips dimages (returned as None): training needs only the grads."""
    cfg = cache["cfg"]
    ws, gen = cache.get("workspace", (None, None))
    if ws is not None and ws.generation != gen:
        raise StaleCacheError("this forward cache's workspace buffers were overwritten by a "
                              "later vit_forward with the same workspace; run backward first")
    dz, grads = head_backward(dlogits, cache["head"])
    for i in reversed(range(cfg.depth)):
        dz, g = block_backward(dz, cache["blocks"][i], cache["block_ws"][i])
        if cache["rel"][i] is not None:
            dz = add_rel_grads(dz, g, cache["rel"][i])
        grads.update(add_prefix(g, f"blocks.{i}."))
    dz, _ = dropout_backward(dz, cache["drop"])
    de, g_tok = embed_tokens_backward(dz, cache["tokens"])
    g_tok.update(pos_embed_backward(g_tok.pop("pos_embed"), cache["pos"]))
    dimages, g_patch = patch_embed_backward(de, cache["patch"], need_dx=input_grad)
    grads.update(g_tok)
    grads.update(add_prefix(g_patch, "patch_embed."))
    return dimages, grads


def attention_maps(cache):
    """The attention probabilities A of every block, [(B, heads, T, T)] * depth, from a
    vit_forward cache (what attention rollout and attention distance read; with
    all_tokens=False the last is (B, heads, 1, T), the class token's row)."""
    return [attention_probs(c) for c in cache["blocks"]]


def predict(params, images, cfg: ViTConfig, batch_size=256):
    """images (B, C, H, W) -> class probabilities (B, K), in batches, without dropout: the
    ViT's case of minivit.models.predict_probs, which every model shares."""
    from .models import predict_probs  # noqa: PLC0415 - models imports this module
    return predict_probs(params, images, cfg, batch_size=batch_size)
