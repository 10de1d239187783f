"""Attention rollout (Abnar & Zuidema 2020): how much each input token feeds the class token.

With residual connections a token's output is half attention, half itself, so each layer's
head-averaged attention A_bar_l gets the identity added and its rows renormalised:
    A_hat_l = (A_bar_l + I) / rowsum,        R = A_hat_L A_hat_{L-1} ... A_hat_1
R[i, j] is the share of input token j in output token i. The class token's row over the
patches, reshaped to the patch grid, is the attention map drawn over the image.
"""
from ..backend import get_array_module


def check_square(maps):
    """Raise ValueError unless every map is (B, heads, T, T): a vit_forward cache made with
    all_tokens=False holds only the class token's row (B, heads, 1, T) in its last block."""
    for i, A in enumerate(maps):
        if A.ndim != 4 or A.shape[-1] != A.shape[-2]:
            raise ValueError(f"attention map {i} is {tuple(A.shape)}, not (B, heads, T, T): "
                             "run vit_forward with all_tokens=True (the default) for maps")


def attention_rollout(maps):
    """maps: [(B, heads, T, T)] * L, each row-stochastic -> R (B, T, T), row-stochastic."""
    check_square(maps)
    xp = get_array_module(maps[0])
    T = maps[0].shape[-1]
    eye = xp.eye(T, dtype=maps[0].dtype)
    R = None
    for A in maps:
        A_hat = A.mean(axis=1) + eye                                 # (B, T, T)
        A_hat /= A_hat.sum(axis=-1, keepdims=True)
        R = A_hat if R is None else A_hat @ R                        # later layers on the left
    return R


def rollout_map(maps, grid_hw, has_cls=True):
    """The class token's rollout over the patches as (B, h, w). Without a class token
    (pool="gap") the mean over all output tokens is drawn instead."""
    R = attention_rollout(maps)
    B = R.shape[0]
    row = R[:, 0, 1:] if has_cls else R.mean(axis=1)                # (B, N)
    return row.reshape(B, *grid_hw)
