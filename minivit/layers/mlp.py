"""The transformer MLP: fc1 -> GELU -> dropout -> fc2 -> dropout (D -> mlp_dim -> D).

Lean activations: the cache keeps fc1's output h and Phi(h) (GELU's cache); GELU(h) = h Phi(h),
fc2's input, is recomputed in backward (one multiply) instead of being stored.
"""
from ..backend import get_array_module
from ..workspace import buffer
from .dropout import dropout_backward, dropout_forward
from .gelu import gelu_backward, gelu_forward, gelu_recompute
from .linear import linear_backward, linear_forward


def mlp_forward(x, p, dropout=0.0, rng=None, train=False, approximate="none", ws=None):
    """x (B, T, D) -> (B, T, D).

    p holds fc1.weight (D, M), fc1.bias (M,), fc2.weight (M, D), fc2.bias (D,)."""
    xp = get_array_module(x)
    dt = xp.result_type(x, p["fc1.weight"])
    hid = x.shape[:-1] + (p["fc1.weight"].shape[1],)
    h, c1 = linear_forward(x, p["fc1.weight"], p["fc1.bias"], defer_bias=True,
                           out=buffer(ws, "fc1", hid, dt, xp))          # x W_1 (B, T, M)
    g, cg = gelu_forward(h, approximate, out=buffer(ws, "gelu", hid, dt, xp, shared=True),
                         cdf_out=buffer(ws, "cdf", hid, dt, xp),
                         bias=p["fc1.bias"])                            # GELU(x W_1 + b_1)
    g, cd1 = dropout_forward(g, dropout, rng, train)
    y, c2 = linear_forward(g, p["fc2.weight"], p["fc2.bias"],
                           out=buffer(ws, "mlp.out", x.shape, dt, xp, shared=True))  # (B, T, D)
    if cd1 is None:
        c2 = (None,) + c2[1:]                  # fc2's input GELU(h): recomputed in backward
    y, cd2 = dropout_forward(y, dropout, rng, train)
    return y, (c1, cg, cd1, c2, cd2)


def mlp_backward(dy, cache, ws=None):
    c1, cg, cd1, c2, cd2 = cache
    xp = get_array_module(dy)
    dy, _ = dropout_backward(dy, cd2)
    h = cg[0]                                                          # fc1 output (B, T, M)
    if c2[0] is None:
        g = gelu_recompute(cg, out=buffer(ws, "gelu", h.shape, h.dtype, xp, shared=True))
        c2 = (g,) + c2[1:]
    dh, g2 = linear_backward(dy, c2, dx_out=buffer(ws, "dh", h.shape, h.dtype, xp, shared=True))
    dh, _ = dropout_backward(dh, cd1)
    dh, _ = gelu_backward(dh, cg, out=dh)                              # in place
    dx, g1 = linear_backward(dh, c1, dx_out=buffer(ws, "mlp.dx", dy.shape, dh.dtype, xp, True))
    return dx, {"fc1.weight": g1["weight"], "fc1.bias": g1["bias"],
                "fc2.weight": g2["weight"], "fc2.bias": g2["bias"]}
