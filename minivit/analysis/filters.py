"""Patch-embedding filters (the paper's Fig. 7, left): the principal components of E.

E (P^2 C, D) has D columns, each a linear filter over a flattened P x P x C patch. Centring the
D filters and taking the SVD  E^T - mean = U S V^T,  the rows of V^T are the principal
directions, S^2 / sum S^2 the share of variance each explains. Each row is reshaped back to an
image: patches are flattened in (c, i, j) order (see layers/patch.py), so a row is (C, P, P)
and is drawn as (P, P, C).
"""
import numpy as np

from ..backend import to_numpy


def embedding_filters(E, patch_size, in_channels=3, n=28):
    """E (P^2 C, D) -> (components (n, P, P, C), explained variance ratio (n,)), host arrays.

    Each component's sign is fixed so that its largest-magnitude entry is positive."""
    E = to_numpy(E).astype(np.float64)
    P, C = patch_size, in_channels
    if E.shape[0] != P * P * C:
        raise ValueError(f"E has {E.shape[0]} rows, expected P*P*C = {P * P * C}")
    X = E.T - E.T.mean(axis=0, keepdims=True)                         # (D, P^2 C), centred
    _, S, Vt = np.linalg.svd(X, full_matrices=False)
    n = min(n, Vt.shape[0])
    comps = Vt[:n]
    sign = np.sign(comps[np.arange(n), np.abs(comps).argmax(axis=1)])
    comps = comps * sign[:, None]
    ratio = (S ** 2 / max((S ** 2).sum(), 1e-300))[:n]
    return comps.reshape(n, C, P, P).transpose(0, 2, 3, 1), ratio
