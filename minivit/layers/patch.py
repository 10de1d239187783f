"""Images to patch tokens: patchify, the patch embedding E (eq. 1), class token and E_pos.

    z_0 = [x_class; x_p^1 E; x_p^2 E; ...; x_p^N E] + E_pos,
    E in R^{(P^2 C) x D},  E_pos in R^{(N+1) x D}                          (eq. 1)
"""
from ..backend import get_array_module
from ..parallel import col_sums
from .linear import linear_backward, linear_forward


def patchify(images, P):
    """(B, C, H, W) -> (B, N, P*P*C), N = (H/P)(W/P), patches in row-major grid order.

    Each patch is flattened in (c, i, j) order, so E[(c*P + i)*P + j, d] equals the weight
    w[d, c, i, j] of a stride-P convolution: x_p E is that convolution, one patch at a time.
    """
    B, C, H, W = images.shape
    h, w = H // P, W // P
    x = images.reshape(B, C, h, P, w, P).transpose(0, 2, 4, 1, 3, 5)  # (B, h, w, C, P, P)
    return x.reshape(B, h * w, C * P * P)


def unpatchify(patches, P, C, H, W):
    """Inverse of patchify: (B, N, P*P*C) -> (B, C, H, W) (used for the input gradient)."""
    B = patches.shape[0]
    h, w = H // P, W // P
    x = patches.reshape(B, h, w, C, P, P).transpose(0, 3, 1, 4, 2, 5)  # (B, C, h, P, w, P)
    return x.reshape(B, C, H, W)


def patch_embed_forward(images, E, b, P):
    """(B, C, H, W) -> x_p E + b: (B, N, D)."""
    x_p = patchify(images, P)                                         # (B, N, P^2 C)
    e, lin_cache = linear_forward(x_p, E, b)                          # (B, N, D)
    return e, (lin_cache, P, images.shape)


def patch_embed_backward(de, cache, need_dx=True):
    """dE = x_p^T de, db = sum de, dimages = unpatchify(de E^T) (None unless need_dx)."""
    lin_cache, P, (B, C, H, W) = cache
    dx_p, grads = linear_backward(de, lin_cache, need_dx=need_dx)
    return (unpatchify(dx_p, P, C, H, W) if need_dx else None), grads


def embed_tokens_forward(e, cls_token, pos_embed):
    """Prepend x_class and add E_pos. e (B, N, D), cls (1, 1, D) or None, pos (1, T, D).

    Returns z0 (B, N+1, D) with a class token, (B, N, D) without (pool="gap").
    """
    xp = get_array_module(e)
    B, N, D = e.shape
    if cls_token is None:
        return e + pos_embed, (False,)
    z0 = xp.empty((B, N + 1, D), dtype=e.dtype)
    z0[:, 0:1] = cls_token
    z0[:, 1:] = e
    z0 += pos_embed
    return z0, (True,)


def embed_tokens_backward(dz0, cache):
    """dE_pos sums over the batch; dx_class sums row 0 over the batch; de is rows 1..N."""
    (has_cls,) = cache
    B, T, D = dz0.shape
    grads = {"pos_embed": col_sums(dz0.reshape(B, T * D)).reshape(1, T, D)}   # (1, T, D)
    if not has_cls:
        return dz0, grads
    grads["cls_token"] = grads["pos_embed"][:, 0:1].copy()        # both were added to token 0
    return dz0[:, 1:], grads
