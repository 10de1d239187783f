"""The pre-LN Transformer encoder block.

    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                                          (eq. 2)
    z_l  = MLP(LN(z'_l)) + z'_l                                                (eq. 3)
Residuals: the gradient reaching z'_l flows both into the branch and straight through, so the
two add. Stochastic depth scales each branch by a per-sample keep mask.
On NumPy each LN's gamma and beta are folded into the linear layer it feeds (U_qkv, the MLP's
W_1): LN(z) U + b = xhat (diag(gamma) U) + (beta U + b), the same map with fewer passes over
the tokens (layernorm.fold_into_linear); backward unfolds the gradients (unfold_grads). On CuPy
the fused LayerNorm kernel applies gamma and beta in its one pass, so there the fold would only
add kernel launches (3 forward, 2 backward per LN) and is not made.
"""
from .. import kernels_cupy
from ..backend import get_array_module
from ..workspace import buffer
from .attention import attention_backward, attention_forward
from .dropout import drop_path_backward, residual_drop_path
from .layernorm import fold_into_linear, layernorm_backward, layernorm_forward, unfold_grads
from .mlp import mlp_backward, mlp_forward


def sub_params(p, prefix):
    """The entries of p under `prefix` ("attn.") with the prefix removed."""
    n = len(prefix)
    return {k[n:]: v for k, v in p.items() if k.startswith(prefix)}


def add_prefix(grads, prefix):
    return {prefix + k: v for k, v in grads.items()}


def block_forward(z, p, heads, *, eps=1e-6, dropout=0.0, attn_dropout=0.0, drop_path=0.0,
                  approximate="none", rng=None, train=False, attn_bias=None, ws=None, queries=None,
                  path_masks=None):
    """z_{l-1} (B, T, D) -> z_l (B, T, D). p: this block's params without the blocks.{i}. prefix.
    ws: an optional Workspace scoped to this block (its buffers hold the activations).
    queries: z_l for the first `queries` tokens only, (B, queries, D): attention reads every
    token of z_{l-1}, but the other rows of eq. 2-3 are skipped (ViT's last block, eq. 4).
    path_masks: the two branches' drop-path masks drawn beforehand (drop_path_masks)."""
    xp = get_array_module(z)
    dt = z.dtype
    # CuPy: the branches' last biases (U_msa's, W_2's) go into the residual add's kernel
    defer = kernels_cupy.enabled(z) and not (train and dropout)
    h, c_ln1, pa, fold1 = _norm(z, p, "1", "attn.", "qkv.", eps, ws)   # LN_1, MSA's params
    a, c_attn = attention_forward(h, pa, heads, attn_bias, attn_dropout, rng, train, ws=ws,
                                  queries=queries, defer_bias=defer)      # (B, Tq, D)
    pm1, pm2 = (None, None) if path_masks is None else path_masks
    zq = z if queries is None else z[:, :queries]
    z1, c_dp1 = residual_drop_path(zq, a, drop_path, rng, train, pm1,       # z'_l  (eq. 2)
                                   out=buffer(ws, "z1", a.shape, dt, xp, shared=True),
                                   bias=pa["proj.bias"] if defer else None)
    h, c_ln2, pm, fold2 = _norm(z1, p, "2", "mlp.", "fc1.", eps, ws)   # LN_2, MLP's params
    m, c_mlp = mlp_forward(h, pm, dropout, rng, train, approximate, ws=ws, defer_bias=defer)
    out = _buffer_not(ws, "z2", z, xp, z1.shape)   # the residual stream: two buffers, ping-pong
    z2, c_dp2 = residual_drop_path(z1, m, drop_path, rng, train, pm2, out=out,   # z_l (eq. 3)
                                   bias=pm["fc2.bias"] if defer else None)
    return z2, (c_ln1, c_attn, c_dp1, c_ln2, c_mlp, c_dp2, (fold1, fold2))


def _norm(z, p, i, branch, linear, eps, ws):
    """(LN_i(z), its cache, the branch's params, the fold or None): gamma_i, beta_i folded into
    the branch's first linear on NumPy, applied by the fused LN kernel on CuPy (module doc)."""
    xp = get_array_module(z)
    xhat = buffer(ws, "xhat" + i, z.shape, z.dtype, xp)
    if kernels_cupy.enabled(z):
        h, c = layernorm_forward(z, p[f"norm{i}.weight"], p[f"norm{i}.bias"], eps,
                                 out=buffer(ws, "h" + i, z.shape, z.dtype, xp), xhat_out=xhat)
        return h, c, sub_params(p, branch), None
    h, c = layernorm_forward(z, None, None, eps, xhat_out=xhat)
    return (h, c, *_folded(p, f"norm{i}.", branch, linear))


def _folded(p, norm, branch, linear):
    """The branch's params (prefix removed) with the LN's affine folded into its first linear,
    and what backward needs to unfold: (norm, linear's full name, gamma, beta, W)."""
    q = sub_params(p, branch)
    gamma, beta, W = p[norm + "weight"], p[norm + "bias"], q[linear + "weight"]
    q[linear + "weight"], q[linear + "bias"] = fold_into_linear(gamma, beta, W, q[linear + "bias"])
    return q, (norm, branch + linear, gamma, beta, W)


def _unfold(grads, fold):
    """Replace the folded linear's gradients in grads (full names) by the true ones; add the
    LN's gamma and beta gradients."""
    norm, linear, gamma, beta, W = fold
    g_lin, g_ln = unfold_grads(gamma, beta, W, grads[linear + "weight"], grads[linear + "bias"])
    grads[linear + "weight"], grads[linear + "bias"] = g_lin["weight"], g_lin["bias"]
    grads[norm + "weight"], grads[norm + "bias"] = g_ln["weight"], g_ln["bias"]


def _buffer_not(ws, key, avoid, xp, shape=None):
    """A shared buffer of `shape` (default avoid's) and avoid's dtype that is not `avoid`
    itself (key, else key + "'")."""
    shape = avoid.shape if shape is None else shape
    b = buffer(ws, key, shape, avoid.dtype, xp, shared=True)
    return buffer(ws, key + "'", shape, avoid.dtype, xp, shared=True) if b is avoid else b


def attention_probs(cache):
    """The block's attention probabilities (B, heads, Tq, T) from its forward cache."""
    return cache[1]["attn"]


def block_backward(dz2, cache, ws=None):
    """dz_{l-1} = dz'_l + LN1'(MSA'(dz'_l)),  dz'_l = dz_l + LN2'(MLP'(dz_l)).
    With queries=Tq, dz_l is (B, Tq, D) and the straight-through path reaches rows :Tq only."""
    c_ln1, c_attn, c_dp1, c_ln2, c_mlp, c_dp2, folds = cache
    xp = get_array_module(dz2)
    dm, _ = drop_path_backward(dz2, c_dp2)
    dh, g_mlp = mlp_backward(dm, c_mlp, ws)
    dz1, g_ln2 = layernorm_backward(dh, c_ln2, out=_buffer_not(ws, "dz1", dz2, xp),
                                    residual=dz2)                     # + residual of eq. 3
    da, _ = drop_path_backward(dz1, c_dp1)
    dh, g_attn = attention_backward(da, c_attn, ws)
    whole = dh.shape == dz1.shape            # else the last block's: dz1 has the queries' rows
    dz, g_ln1 = layernorm_backward(dh, c_ln1, out=_buffer_not(ws, "dz", dz1, xp, dh.shape),
                                   residual=dz1 if whole else None)   # + residual of eq. 2
    if not whole:
        head = dz[:, :dz1.shape[1]]          # into a view: `dz[...] += dz1` would also copy it
        head += dz1                          # back onto itself (a kernel)
    grads = {**add_prefix(g_attn, "attn."), **add_prefix(g_mlp, "mlp."),
             **add_prefix(g_ln1, "norm1."), **add_prefix(g_ln2, "norm2.")}   # {} when folded
    for fold in folds:
        if fold is not None:
            _unfold(grads, fold)
    return dz, grads
