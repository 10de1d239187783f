"""Position-embedding variants (the paper's Appendix D.4, Table 8), chosen by cfg.pos_embed.

  "none"  no positional information: the patches are a bag of tokens.
  "1d"    learned E_pos (1, T, D), one row per token in raster order (eq. 1, the default).
  "2d"    learned row table X (h, D/2) and column table Y (w, D/2); patch (i, j) gets
          [X_i ; Y_j] (D). The class token gets none (its own learned x_class suffices).
  "rel"   relative: each block has a table R (O, D) with one embedding per 2-D offset
          p_q - p_k between patches, O = (2h-1)(2w-1). The block's own query q (the same
          LN(z) U_q as its attention, per head) attends to these as keys:
              bias[q, k] = q . R[off(q, k)] / sqrt(D_h)       (per head: R split like q)
          and the bias is added to the content logits before the softmax (attention_forward's
          `bias`). Pairs with the class token have no offset; they get three extra learned
          rows (class->patch, patch->class, class->class), as BEiT does.

Backward of "rel": attention_backward returns d bias; for a fixed query every key has a
different offset, so scattering d bias back into the (query, offset) logits is a plain
assignment (only the class query's class->patch entry is a sum over the patches):
d logits[q, off(q, k)] = d bias[q, k];  then
dq = d logits R^T / sqrt(D_h),  dR = q^T d logits / sqrt(D_h),  and dq flows through U_q and
LN1 into z (these add to the block's own gradients).
"""
import math

import numpy as np

from ..backend import arange, constant, get_array_module
from .layernorm import layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward

VARIANTS = ("none", "1d", "2d", "rel")


def relative_offsets(grid_hw, xp=np):
    """(N, N) int array: the index of offset p_q - p_k in a (2h-1) x (2w-1) table."""
    h, w = grid_hw
    idx = xp.arange(h * w)
    r, c = idx // w, idx % w
    dr = r[:, None] - r[None, :] + (h - 1)
    dc = c[:, None] - c[None, :] + (w - 1)
    return dr * (2 * w - 1) + dc


def pos_embed_2d_forward(row, col):
    """row X (h, D/2), col Y (w, D/2) -> patch E_pos (1, h w, D), patch (i, j) = [X_i ; Y_j]."""
    xp = get_array_module(row)
    (h, Dr), (w, Dc) = row.shape, col.shape
    grid = xp.concatenate([xp.broadcast_to(row[:, None, :], (h, w, Dr)),
                           xp.broadcast_to(col[None, :, :], (h, w, Dc))], axis=-1)
    return grid.reshape(1, h * w, Dr + Dc), (h, w, Dr)


def pos_embed_2d_backward(dpos, cache):
    """dX_i = sum_j dpos[i, j, :D/2],  dY_j = sum_i dpos[i, j, D/2:]."""
    h, w, Dr = cache
    g = dpos.reshape(h, w, -1)
    return {"pos_embed_row": g[..., :Dr].sum(axis=1), "pos_embed_col": g[..., Dr:].sum(axis=0)}


def pos_embed_forward(params, cfg):
    """The E_pos added to z_0: (1, T, D) for "1d"/"2d", the scalar 0.0 for "none"/"rel"."""
    kind = cfg.pos_embed
    if kind == "1d":
        return params["pos_embed"], (kind, None)
    if kind != "2d":
        return 0.0, (kind, None)
    xp = get_array_module(params["pos_embed_row"])
    pos, c = pos_embed_2d_forward(params["pos_embed_row"], params["pos_embed_col"])
    if cfg.pool == "cls":                                             # no E_pos on x_class
        pos = xp.concatenate([xp.zeros_like(pos[:, :1]), pos], axis=1)
    return pos, (kind, (c, cfg.pool == "cls"))


def pos_embed_backward(dpos, cache):
    """dpos (1, T, D), the gradient of the added E_pos -> grads of the variant's parameters."""
    kind, c = cache
    if kind == "1d":
        return {"pos_embed": dpos}
    if kind != "2d":
        return {}
    c2d, has_cls = c
    return pos_embed_2d_backward(dpos[:, int(has_cls):], c2d)


def rel_table_size(cfg):
    """O = (2h-1)(2w-1) offsets, plus 3 rows with a class token (as BEiT): class->patch,
    patch->class and class->class, which have no spatial offset."""
    h, w = cfg.grid
    return (2 * h - 1) * (2 * w - 1) + 3 * (cfg.pool == "cls")


def token_offsets(cfg, xp=np):
    """(T, T) index into the rel_pos table for every (query, key) pair of tokens, built once per
    (backend, grid, pool) and reused (read-only) step after step."""
    return constant(("token_offsets", xp, tuple(cfg.grid), cfg.pool),
                    lambda: _token_offsets(cfg.grid, cfg.pool == "cls", xp))


def _token_offsets(grid, has_cls, xp):
    off = relative_offsets(grid, xp)
    if not has_cls:
        return off
    h, w = grid
    O = (2 * h - 1) * (2 * w - 1)                 # the class rows come after the O offsets
    T = off.shape[0] + 1
    full = xp.empty((T, T), dtype=off.dtype)
    full[1:, 1:] = off
    full[0, 1:], full[1:, 0], full[0, 0] = O, O + 1, O + 2
    return full


def rel_bias_forward(z, p, cfg):
    """The relative-position logits of one block: z_{l-1} (B, T, D) -> bias (B, heads, T, T).

    p: the block's params (norm1.*, attn.qkv.*, attn.rel_pos). Returns (None, None) unless
    cfg.pos_embed == "rel"."""
    if cfg.pos_embed != "rel":
        return None, None
    xp = get_array_module(z)
    B, T, D = z.shape
    H = cfg.heads
    Dh = D // H
    h, c_ln = layernorm_forward(z, p["norm1.weight"], p["norm1.bias"], cfg.ln_eps)
    q, c_q = linear_forward(h, p["attn.qkv.weight"][:, :D], p["attn.qkv.bias"][:D])  # (B, T, D)
    q = q.reshape(B, T, H, Dh).transpose(0, 2, 1, 3)                  # (B, H, T, Dh)
    R = p["attn.rel_pos"].reshape(-1, H, Dh).transpose(1, 2, 0)       # (H, Dh, O)
    scale = 1.0 / math.sqrt(Dh)
    logits = (q @ R) * scale                                          # (B, H, T, O)
    off = token_offsets(cfg, xp)                                      # (T, T)
    rows = arange(xp, T)[:, None]
    bias = logits[:, :, rows, off]                                    # gather by offset
    return bias, (c_ln, c_q, q, R, scale, off, cfg.pool == "cls", logits.shape)


def rel_bias_backward(dbias, cache):
    """dbias (B, heads, T, T) -> (dz (B, T, D), partial grads of norm1, U_q and rel_pos)."""
    xp = get_array_module(dbias)
    c_ln, c_q, q, R, scale, off, has_cls, lshape = cache
    s = int(has_cls)
    dlogits = xp.zeros(lshape, dtype=dbias.dtype)
    T = off.shape[0]
    rows = arange(xp, T)[s:, None]
    dlogits[:, :, rows, off[s:]] = dbias[:, :, s:]                    # distinct keys per row
    if has_cls:                                   # the class row repeats class->patch N times
        O = lshape[-1] - 3
        dlogits[:, :, 0, O] = dbias[:, :, 0, 1:].sum(axis=-1)
        dlogits[:, :, 0, O + 2] = dbias[:, :, 0, 0]
    dlogits *= scale
    dq = dlogits @ R.transpose(0, 2, 1)                               # (B, H, T, Dh)
    dR = xp.einsum("bhnd,bhno->hdo", q, dlogits)                      # (H, Dh, O)
    B, H, _, Dh = dq.shape
    dh, g_q = linear_backward(dq.transpose(0, 2, 1, 3).reshape(B, T, H * Dh), c_q)
    dz, g_ln = layernorm_backward(dh, c_ln)
    grads = {"norm1.weight": g_ln["weight"], "norm1.bias": g_ln["bias"],
             "attn.qkv.weight[:, :D]": g_q["weight"], "attn.qkv.bias[:D]": g_q["bias"],
             "attn.rel_pos": dR.transpose(2, 0, 1).reshape(-1, H * Dh)}
    return dz, grads


def add_rel_grads(dz, block_grads, rel_cache):
    """Fold the relative bias's backward into a block's: pops "attn.bias" from block_grads,
    adds the partial gradients in place, returns dz plus the bias path's dz."""
    dbias = block_grads.pop("attn.bias")
    dz_rel, g = rel_bias_backward(dbias, rel_cache)
    D = dz.shape[-1]
    block_grads["norm1.weight"] += g["norm1.weight"]
    block_grads["norm1.bias"] += g["norm1.bias"]
    w, b = block_grads["attn.qkv.weight"][:, :D], block_grads["attn.qkv.bias"][:D]   # views
    w += g["attn.qkv.weight[:, :D]"]
    b += g["attn.qkv.bias[:D]"]
    block_grads["attn.rel_pos"] = g["attn.rel_pos"]
    return dz + dz_rel
