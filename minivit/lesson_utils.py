"""What the lessons share: one printed row per check, and a non-zero exit if any failed.

    check("z0", got, want, tol)        ->  "  z0                     maxdiff 3.1e-17  OK"
    gradcheck(forward, backward, inputs) -> one row per tensor (relative and element error)
    finish()                           ->  summary line; sys.exit(1) when a check failed
"""
import os
import sys

import numpy as np

from . import backend
from .backend import to_numpy
from .gradcheck import check_gradients

if os.environ.get("MINIVIT_BACKEND", "numpy") != "numpy":   # the lessons mix host arrays in
    print(f"note: the lessons check float64 NumPy arrays, so MINIVIT_BACKEND="
          f"{os.environ['MINIVIT_BACKEND']} is set aside for them (lesson 1 shows CuPy)")
    backend.use("numpy")

# The gradient-check thresholds of the tests (issue 2): norm-relative and element error.
REL_TOL = 1e-7
ELEM_TOL = 1e-6

_results = []          # (name, ok) of every check so far


def _record(name, ok, detail):
    _results.append((name, ok))
    print(f"  {name:<34} {detail}  {'OK' if ok else 'FAIL'}")
    return ok


def check(name, got, want, tol=1e-12):
    """Compare arrays (or scalars) elementwise: max |got - want| <= tol, shapes equal."""
    g = np.asarray(to_numpy(got), dtype=np.float64)
    w = np.asarray(to_numpy(want), dtype=np.float64)
    if g.shape != w.shape:
        return _record(name, False, f"shape {g.shape} != {w.shape}")
    diff = float(np.abs(g - w).max()) if g.size else 0.0
    ok = bool(np.isfinite(diff)) and diff <= tol
    return _record(name, ok, f"maxdiff {diff:.1e} (tol {tol:.0e})")


def check_true(name, condition, detail=""):
    """Record a yes/no fact (a shape, an inequality) as a check row."""
    return _record(name, bool(condition), detail)


def gradcheck(forward, backward, inputs, x_name="x", max_elems=None, seed=0,
              rel_tol=REL_TOL, elem_tol=ELEM_TOL):
    """Central differences (minivit.gradcheck) against a layer's backward, every tensor.

    forward(**inputs) -> (out, cache); backward(dout, cache) -> (d x_name, {name: grad}) for
    the other inputs (dotted names like "attn.qkv.weight" pass through **kwargs unchanged).
    Inputs must be float64. With max_elems, that many random elements per tensor are checked.
    """
    def backward_dict(G, cache):
        dx, grads = backward(G, cache)
        return {x_name: dx, **grads}

    report = check_gradients(forward, backward_dict, inputs, seed=seed, max_elems=max_elems)
    ok_all = True
    for name, (rel, elem, norm) in report.items():
        ok = rel <= rel_tol and elem <= elem_tol and norm > 1e-12     # an all-zero grad hides bugs
        ok_all &= _record("d" + name, ok, f"rel {rel:.1e}  elem {elem:.1e}  |grad| {norm:.2e}")
    return ok_all


def finish():
    """Print the summary; exit 1 if any check failed (so a broken lesson fails its test)."""
    failed = [name for name, ok in _results if not ok]
    if failed:
        print(f"\n{len(failed)} of {len(_results)} checks FAILED: {', '.join(failed)}")
        sys.exit(1)
    print(f"\nall {len(_results)} checks passed")
