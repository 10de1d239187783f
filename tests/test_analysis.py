"""The analysis tools on hand-made attention maps and embeddings (loop references) and on a
small random model."""
import math

import numpy as np
import pytest

from minivit import ViTConfig, attention_maps, init_params, vit_forward
from minivit.analysis import (
    attention_rollout,
    embedding_filters,
    mean_attention_distance,
    neighbour_similarity,
    patch_distances,
    patch_position_embeddings,
    pos_embed_similarity,
    rollout_map,
)

SMALL = ViTConfig(image_size=(16, 12), patch_size=4, num_classes=5, dim=16, depth=3, heads=2,
                  mlp_dim=32)


def random_maps(rng, L=3, B=2, H=2, T=5):
    return [np.exp(rng.standard_normal((B, H, T, T))) for _ in range(L)]


def normalise(maps):
    return [A / A.sum(-1, keepdims=True) for A in maps]


def test_rollout_matches_the_definition_by_loops(rng):
    maps = normalise(random_maps(rng))
    R = attention_rollout(maps)
    for b in range(2):
        ref = np.eye(5)
        for A in maps:                                    # layer 1 first, later on the left
            A_hat = A[b].mean(0) * 0.5 + np.eye(5) * 0.5
            ref = A_hat @ ref
        np.testing.assert_allclose(R[b], ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(R.sum(-1), 1.0, atol=1e-12)


def test_rollout_follows_information_through_layers():
    # layer 1: patch 1 takes everything from patch 3; layer 2: the class token from patch 1.
    T = 5
    A1, A2 = np.eye(T), np.eye(T)
    A1[1] = np.eye(T)[3]
    A2[0] = np.eye(T)[1]
    m = rollout_map([A1[None, None], A2[None, None]], (2, 2))
    # class row: 1/2 itself, 1/4 patch 1 (token 1), 1/4 patch 3 (token 3) via token 1
    np.testing.assert_allclose(m[0], [[0.25, 0.0], [0.25, 0.0]], atol=1e-15)


def test_mean_distance_by_loops_and_special_cases(rng):
    cfg = SMALL
    h, w = cfg.grid
    N, P = h * w, cfg.patch_size
    maps = normalise(random_maps(rng, L=2, B=2, H=3, T=N + 1))
    got = mean_attention_distance(maps, (h, w), P)
    assert got.shape == (2, 3)
    for layer, A in enumerate(maps):
        for head in range(3):
            total = 0.0
            for b in range(2):
                for q in range(N):
                    row = A[b, head, 1 + q, 1:] / A[b, head, 1 + q, 1:].sum()
                    for k in range(N):
                        dy, dx = (q // w - k // w) * P, (q % w - k % w) * P
                        total += row[k] * math.hypot(dy, dx)
            assert abs(got[layer, head] - total / (2 * N)) < 1e-12
    # attending to oneself -> 0; to the right-hand neighbour -> exactly P
    self_att = np.eye(N + 1)[None, None]
    assert mean_attention_distance([self_att], (h, w), P)[0, 0] == 0.0
    right = np.zeros((N, N))
    for q in range(N):
        right[q, q + 1 if q % w < w - 1 else q - 1] = 1.0
    assert np.isclose(mean_attention_distance([right[None, None]], (h, w), P, has_cls=False),
                      P)


def test_patch_distances():
    d = patch_distances((2, 3), 4)
    assert d[0, 5] == pytest.approx(math.hypot(4, 8)) and np.allclose(d, d.T)


def test_pos_embed_similarity_by_loops(rng):
    g = rng.standard_normal((3, 4, 6))
    sim = pos_embed_similarity(g)
    for i, j, k, l in [(0, 0, 0, 0), (1, 2, 2, 3), (2, 3, 0, 1)]:
        a, b = g[i, j], g[k, l]
        assert sim[i, j, k, l] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    np.testing.assert_allclose(sim[np.arange(3)[:, None], np.arange(4), np.arange(3)[:, None],
                                   np.arange(4)], 1.0)


def test_neighbour_similarity_by_loop(rng):
    sim = rng.random((3, 5, 3, 5))                                   # (h, w, h, w), not symmetric
    right = [sim[i, j, i, j + 1] for i in range(3) for j in range(4)]
    assert neighbour_similarity(sim) == pytest.approx(np.mean(right), rel=1e-12)


def test_patch_position_embeddings_per_variant():
    p = init_params(SMALL, seed=0)
    pe = patch_position_embeddings(p, SMALL)
    np.testing.assert_array_equal(pe.reshape(12, -1), p["pos_embed"][0, 1:])
    cfg2 = SMALL.replace(pos_embed="2d")
    p2 = init_params(cfg2, seed=0)
    pe2 = patch_position_embeddings(p2, cfg2)
    np.testing.assert_array_equal(pe2[3, 1], np.concatenate([p2["pos_embed_row"][3],
                                                             p2["pos_embed_col"][1]]))
    with pytest.raises(ValueError, match="no absolute position embedding"):
        patch_position_embeddings(init_params(SMALL.replace(pos_embed="rel")),
                                  SMALL.replace(pos_embed="rel"))


def test_filters_recover_planted_components_in_pixel_order():
    rng = np.random.default_rng(0)
    P, C, D = 3, 2, 200
    u1, u2 = np.zeros(P * P * C), np.zeros(P * P * C)
    u1[(1 * P + 2) * P + 0] = 1.0                         # channel 1, row 2, column 0
    u2[(0 * P + 0) * P + 1] = 1.0                         # channel 0, row 0, column 1
    E = (np.outer(u1, rng.standard_normal(D)) * 5 + np.outer(u2, rng.standard_normal(D)) * 2
         + rng.standard_normal((P * P * C, D)) * 0.01)
    comps, ratio = embedding_filters(E, P, C, n=4)
    assert comps.shape == (4, P, P, C) and ratio[0] > ratio[1] > ratio[2]
    assert abs(comps[0, 2, 0, 1]) > 0.999 and abs(comps[1, 0, 1, 0]) > 0.999
    # the same directions as the covariance's eigenvectors (an independent route)
    X = E.T - E.T.mean(0)
    vals, vecs = np.linalg.eigh(X.T @ X)
    for i in range(4):
        v = vecs[:, -1 - i]
        flat = comps[i].transpose(2, 0, 1).ravel()
        assert abs(abs(flat @ v) - 1) < 1e-9
    np.testing.assert_allclose(ratio, vals[::-1][:4] / vals.sum(), rtol=1e-9)
    with pytest.raises(ValueError, match="expected P\\*P\\*C"):
        embedding_filters(E, 4, C)


def test_tools_on_a_random_model():
    params = init_params(SMALL, seed=0, dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 12))
    maps = attention_maps(vit_forward(params, x, SMALL)[1])
    m = rollout_map(maps, SMALL.grid)
    assert m.shape == (3, 4, 3) and (m > 0).all()
    d = mean_attention_distance(maps, SMALL.grid, SMALL.patch_size)
    assert d.shape == (3, 2) and (d > 0).all() and (d < patch_distances(SMALL.grid, 4).max()).all()
