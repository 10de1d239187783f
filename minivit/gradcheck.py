"""Gradient checking by central differences, in float64.

The scalar checked is L = sum(f(inputs) * G) with a random upstream gradient G (never all
ones: with G = 1, LayerNorm's and softmax's input gradients are zero whatever the backward
does). For each tensor the report gives the norm-based relative error
||a - n|| / (||a|| + ||n||) and the largest element error relative to max |n|.
"""
import numpy as np

from .backend import get_array_module, to_numpy


def numerical_gradient(loss_fn, x, eps=1e-6, max_elems=None, rng=None):
    """dL/dx by (L(x + eps) - L(x - eps)) / 2 eps, element by element, x changed in place and
    restored. With max_elems, only that many random elements are checked (others NaN)."""
    if not x.flags.c_contiguous:      # reshape(-1) would copy: the changes would not reach x
        raise ValueError("numerical_gradient perturbs x in place through x.reshape(-1); "
                         "pass a C-contiguous array (e.g. np.ascontiguousarray(x))")
    grad = np.full(x.shape, np.nan)
    flat = x.reshape(-1)
    idx = np.arange(flat.size)
    if max_elems is not None and flat.size > max_elems:
        idx = (rng or np.random.default_rng(0)).choice(flat.size, max_elems, replace=False)
    gflat = grad.reshape(-1)
    for i in idx:
        old = flat[i].item()
        flat[i] = old + eps
        lp = float(loss_fn())
        flat[i] = old - eps
        lm = float(loss_fn())
        flat[i] = old
        gflat[i] = (lp - lm) / (2 * eps)
    return grad


def compare(analytic, numeric):
    """(relative error, max element error / max |numeric|) over the checked elements."""
    a = to_numpy(analytic).astype(np.float64).reshape(-1)
    n = np.asarray(numeric, dtype=np.float64).reshape(-1)
    keep = ~np.isnan(n)
    a, n = a[keep], n[keep]
    denom = np.linalg.norm(a) + np.linalg.norm(n)
    rel = 0.0 if denom == 0 else float(np.linalg.norm(a - n) / denom)
    scale = float(np.abs(n).max()) if n.size else 0.0
    elem = 0.0 if scale == 0 else float(np.abs(a - n).max() / scale)
    return rel, elem


def check_gradients(forward, backward, inputs, seed=0, eps=1e-6, max_elems=None):
    """Check backward against central differences for every array in `inputs` (a dict).

    forward(**inputs) -> (out, cache); backward(G, cache) -> dict name -> analytic dL/d(name).
    Returns {name: (relative error, element error, analytic grad norm)}.
    """
    for k, v in inputs.items():
        if v.dtype != np.float64:
            raise ValueError(f"gradient checks run in float64; {k} is {v.dtype}")
    out, cache = forward(**inputs)
    G = get_array_module(out).asarray(np.random.default_rng(seed).standard_normal(out.shape))
    analytic = backward(G, cache)

    def loss():
        return float((to_numpy(forward(**inputs)[0]) * to_numpy(G)).sum())

    report = {}
    for name, x in inputs.items():
        num = numerical_gradient(loss, x, eps, max_elems)
        rel, elem = compare(analytic[name], num)
        report[name] = (rel, elem, float(np.linalg.norm(to_numpy(analytic[name]))))
    return report
