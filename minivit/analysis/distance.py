"""Mean attention distance (the paper's Fig. 7, right): how far, in pixels, each head looks.

For one head, query patch q and key patch k at pixel distance d(q, k) (between patch centres,
d = P x the distance on the patch grid):
    dist = mean over images and query patches of  sum_k A_pk[q, k] d(q, k)
The class token has no position, so it is left out on both sides: A_pk is the patch-to-patch
block of A with each row renormalised to sum to 1 (the share of the query's attention that went
to the class token is dropped, not counted as distance 0). The result is the attention-weighted
"receptive field size" of the head, comparable to a CNN's.
"""
import numpy as np

from ..backend import get_array_module, to_numpy
from .rollout import check_square


def patch_distances(grid_hw, patch_size):
    """(N, N) Euclidean pixel distance between the centres of every pair of patches."""
    h, w = grid_hw
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pos = np.stack([r.ravel(), c.ravel()], axis=1) * float(patch_size)  # (N, 2)
    diff = pos[:, None, :] - pos[None, :, :]
    return np.sqrt((diff ** 2).sum(-1))


def mean_attention_distance(maps, grid_hw, patch_size, has_cls=True):
    """maps: [(B, heads, T, T)] * L -> (L, heads) host array of mean distances in pixels."""
    check_square(maps)
    xp = get_array_module(maps[0])
    dist = xp.asarray(patch_distances(grid_hw, patch_size), dtype=maps[0].dtype)  # (N, N)
    s = int(has_cls)
    out = []
    for A in maps:
        A_pp = A[:, :, s:, s:]                                        # (B, H, N, N)
        A_pp = A_pp / A_pp.sum(axis=-1, keepdims=True)
        per_query = (A_pp * dist).sum(axis=-1)                        # (B, H, N)
        out.append(per_query.mean(axis=(0, 2)))                       # (H,)
    return to_numpy(xp.stack(out))
