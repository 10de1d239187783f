"""Optimisers as plain functions over the params/grads dicts, with explicit state.

State is a dict of a step count and per-parameter arrays, so a checkpoint can save it as is.
Updates happen in place on the backend's arrays (no host copies); lr is a host float.

AdamW (Loshchilov & Hutter 2019), decoupled weight decay lambda:
    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,   m^ = m / (1 - b1^t),  v^ = v / (1 - b2^t)
    p <- p - lr lambda p - lr m^ / (sqrt(v^) + eps)
SGD with momentum mu (PyTorch's form, L2 decay added to the gradient):
    g <- g + lambda p,   b <- mu b + g,   p <- p - lr (g + mu b if nesterov else b)
"""
import math

from . import kernels_cupy
from .backend import get_array_module
from .flat import FlatDict, joined


def no_weight_decay(name: str) -> bool:
    """True for parameters that are not decayed: biases, norm scales, E_pos and the class token."""
    parts = name.split(".")
    return (name in ("pos_embed", "cls_token") or parts[-1] == "bias"
            or name.startswith("pos_embed_") or parts[-1] == "rel_pos"     # App. D.4 variants
            or any(p.startswith(("norm", "bn")) for p in parts[:-1]))


def _zeros_like(params):
    return {k: get_array_module(v).zeros_like(v) for k, v in params.items()}


def adamw_init(params) -> dict:
    """{"step": 0, "m": zeros, "v": zeros} with the params' names, shapes and dtypes."""
    return {"step": 0, "m": _zeros_like(params), "v": _zeros_like(params)}


def _decays(name, no_decay, weight_decay):
    return bool(weight_decay) and name not in no_decay and not no_weight_decay(name)


def adamw_step(params, grads, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05,
               no_decay=frozenset(), grad_scale=None, clip_norm=None):
    """One AdamW update of every parameter in `grads`, in place; advances state["step"].
    `no_decay`: more names not to decay (the conv models' BatchNorm scales). `grad_scale`: a
    backend scalar every gradient is multiplied by first (clip_scale's: clipping without a pass
    of its own; the gradients themselves are left as they are). `clip_norm`: clip the global
    norm to it that way (grad_scale computed here). Parameters packed by pack_adamw update
    a run of them per launch."""
    b1, b2 = betas
    state["step"] += 1
    t = state["step"]
    c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t                   # bias corrections
    pack = _packed(params, state, grads)
    if pack is not None:
        return _adamw_packed(pack, grads, lr, (b1, b2, eps, c1, c2), weight_decay, no_decay,
                             grad_scale, clip_norm)
    if clip_norm:
        grad_scale = clip_scale(grads, clip_norm)[0]
    scales = {}                                              # grad_scale in each grad dtype
    for name, grad in grads.items():
        xp = get_array_module(grad)
        p, m, v = params[name], state["m"][name], state["v"][name]
        decay = lr * weight_decay if _decays(name, no_decay, weight_decay) else 0.0
        if grad_scale is not None and grad.dtype not in scales:    # one cast, not one a grad
            scales[grad.dtype] = grad_scale.astype(grad.dtype, copy=False)
        gs = scales.get(grad.dtype)
        if kernels_cupy.enabled(p):                          # the same update, one kernel
            kernels_cupy.adamw_update(p, grad, m, v, lr, b1, b2, eps, decay, c1, c2,
                                      1.0 if gs is None else gs)
            continue
        g = grad if gs is None else grad * gs
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        if decay:
            p *= 1.0 - decay                                 # decoupled: not through m, v
        p -= (lr / c1) * m / (xp.sqrt(v / c2) + eps)


_pack = {}          # the last pack_adamw: a training process packs one model


def pack_adamw(params, state) -> bool:
    """On CuPy (fused kernels on, one float dtype): put every parameter, and each of its AdamW
    moments, in one contiguous buffer, the dicts' arrays becoming views of it (values
    unchanged), decayed parameters first. adamw_step then joins the gradients once (the clipping
    norm reads that) and launches one update per run of same-decay parameters instead of one
    per parameter. A dict whose arrays are later replaced falls back to the per-parameter
    update. Returns whether it packed (nothing is done on NumPy)."""
    names = sorted(params, key=no_weight_decay)              # stable: decayed ones first
    if not names or not kernels_cupy.enabled(params[names[0]]) or \
            len({params[n].dtype for n in names}) != 1:
        return False
    flats = []
    for d in (params, state["m"], state["v"]):
        ordered = {n: d[n] for n in names}
        views = FlatDict(joined(ordered), ordered)
        d.update(views)
        flats.append(views.flat)
    _pack.clear()
    _pack.update(names=names, sizes=[params[n].size for n in names], flats=flats,
                 dicts=(params, state["m"], state["v"]),
                 views=[[d[n] for n in names] for d in (params, state["m"], state["v"])])
    return True


def _packed(params, state, grads):
    """The pack of these dicts if every array is still the packed view and grads has them all."""
    if not _pack or len(grads) != len(_pack["names"]):
        return None
    dicts = (params, state["m"], state["v"])
    if any(d is not e for d, e in zip(dicts, _pack["dicts"], strict=True)):
        return None
    for d, views in zip(dicts, _pack["views"], strict=True):
        if any(d[n] is not a for n, a in zip(_pack["names"], views, strict=True)):
            return None
    return _pack if all(n in grads for n in _pack["names"]) else None


def _adamw_packed(pack, grads, lr, consts, weight_decay, no_decay, grad_scale, clip_norm):
    """adamw_step over packed buffers: one concatenation of the gradients, then one fused
    update per run of parameters that decay alike."""
    b1, b2, eps, c1, c2 = consts
    p, m, v = pack["flats"]
    g = joined({n: grads[n] for n in pack["names"]})
    if clip_norm:
        grad_scale = clip_scale({"all": g}, clip_norm)[0]
    gs = 1.0 if grad_scale is None else grad_scale.astype(g.dtype, copy=False)
    lo = 0
    runs = []                                                # [decays, start, stop]
    for n, size in zip(pack["names"], pack["sizes"], strict=True):
        decays = _decays(n, no_decay, weight_decay)
        if runs and runs[-1][0] == decays:
            runs[-1][2] = lo + size
        else:
            runs.append([decays, lo, lo + size])
        lo += size
    for decays, a, b in runs:
        kernels_cupy.adamw_update(p[a:b], g[a:b], m[a:b], v[a:b], lr, b1, b2, eps,
                                  lr * weight_decay if decays else 0.0, c1, c2, gs)


def sgd_init(params) -> dict:
    """{"step": 0, "m": zeros}: the momentum buffers b."""
    return {"step": 0, "m": _zeros_like(params)}


def sgd_step(params, grads, state, lr, momentum=0.9, nesterov=False, weight_decay=0.0,
             no_decay=frozenset()):
    """One SGD(+momentum, +Nesterov) update in place; L2 decay except for no_weight_decay names."""
    state["step"] += 1
    for name, grad in grads.items():
        p = params[name]
        decay = weight_decay and name not in no_decay and not no_weight_decay(name)
        g = grad + weight_decay * p if decay else grad
        if momentum:
            b = state["m"][name]
            b *= momentum
            b += g
            g = g + momentum * b if nesterov else b
        p -= lr * g


def global_norm(grads):
    """sqrt(sum of every squared gradient element), as a float64 backend 0-d array (no host
    sync). On CuPy one reduction kernel over all of them (minivit.kernels_cupy)."""
    gs = list(grads.values())
    xp = get_array_module(*gs[:1])
    if gs and kernels_cupy.enabled(gs[0]) and len({g.dtype for g in gs}) == 1:
        return xp.sqrt(kernels_cupy.sum_of_squares(gs))
    return xp.sqrt(sum((g * g).sum(dtype=xp.float64) for g in gs))     # float64 sums


def clip_scale(grads, max_norm):
    """(scale, norm): min(1, max_norm / norm) and the global norm, float64 backend scalars (no
    host read). Multiplying every gradient by scale clips their global norm."""
    total = global_norm(grads)
    xp = get_array_module(total)
    return xp.minimum(1.0, max_norm / (total + 1e-6)), total


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so their global norm is at most max_norm.

    Returns the norm before clipping (a 0-d backend array; reading it is the caller's choice)."""
    scale, total = clip_scale(grads, max_norm)
    for name in grads:
        grads[name] *= scale.astype(grads[name].dtype)
    return total


def cosine_lr(step, total_steps, base_lr, warmup_steps, min_lr=0.0) -> float:
    """Linear warmup from base_lr/warmup_steps to base_lr, then cosine decay to min_lr.

    step counts from 0; step >= total_steps gives min_lr."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
