"""Position-embedding similarity (the paper's Fig. 7, centre): the cosine similarity of each
patch's E_pos with every other patch's, drawn as an h x w grid of h x w tiles.

A learned 1-D E_pos that has picked up the 2-D layout shows a bright spot at each tile's own
position, fading with distance, and row/column stripes."""
from ..backend import get_array_module, to_numpy


def patch_position_embeddings(params, cfg):
    """The position embedding each patch receives, as a (h, w, D) host array.

    "1d": E_pos without the class token's row; "2d": [row table[i]; column table[j]]."""
    h, w = cfg.grid
    kind = cfg.pos_embed
    if kind == "1d":
        pe = to_numpy(params["pos_embed"])[0, int(cfg.pool == "cls"):]
        return pe.reshape(h, w, -1)
    if kind == "2d":
        from ..layers.posembed import pos_embed_2d_forward
        return to_numpy(pos_embed_2d_forward(params["pos_embed_row"],
                                             params["pos_embed_col"])[0]).reshape(h, w, -1)
    raise ValueError(f"pos_embed={kind!r} has no absolute position embedding to compare")


def pos_embed_similarity(grid):
    """grid (h, w, D) -> (h, w, h, w): cos(E_pos[i, j], E_pos[k, l])."""
    xp = get_array_module(grid)
    h, w, D = grid.shape
    v = grid.reshape(h * w, D)
    v = v / xp.maximum(xp.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return (v @ v.T).reshape(h, w, h, w)


def neighbour_similarity(sim):
    """The mean cosine similarity of each patch's E_pos with its right-hand neighbour's, from
    pos_embed_similarity's (h, w, h, w): near 1 when the embedding has learned the layout."""
    xp = get_array_module(sim)
    return float(xp.diagonal(xp.diagonal(sim[:, :-1, :, 1:], axis1=0, axis2=2),
                             axis1=0, axis2=1).mean())
