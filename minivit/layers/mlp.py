"""The transformer MLP: fc1 -> GELU -> dropout -> fc2 -> dropout (D -> mlp_dim -> D).

Lean activations, two arrays of (B, T, M) per block either way:
- training on NumPy: GELU(h), fc2's input, and GELU'(h), both written by GELU's one pass over
  fc1's output h (h itself is not kept); backward multiplies by GELU' and recomputes nothing.
- otherwise: h and Phi(h) (GELU's cache); GELU(h) = h Phi(h) is recomputed in backward (one
  multiply), and GELU' there from h and Phi (CuPy: one fused kernel each way).
"""
from ..backend import get_array_module
from ..workspace import buffer
from .dropout import dropout_backward, dropout_forward
from .gelu import gelu_backward, gelu_forward, gelu_recompute
from .linear import linear_backward, linear_forward


def mlp_forward(x, p, dropout=0.0, rng=None, train=False, approximate="none", ws=None,
                defer_bias=False):
    """x (B, T, D) -> (B, T, D).

    p holds fc1.weight (D, M), fc1.bias (M,), fc2.weight (M, D), fc2.bias (D,).
    defer_bias: the output without fc2's bias, which the caller adds in its residual pass
    (not with dropout in training, which acts on the biased output)."""
    xp = get_array_module(x)
    if defer_bias and train and dropout:
        raise ValueError("defer_bias with dropout: the dropout mask applies to x W_2 + b_2")
    dt = xp.result_type(x, p["fc1.weight"])
    hid = x.shape[:-1] + (p["fc1.weight"].shape[1],)
    # Three (B, T, M) buffers, named by role so training and evaluation reuse the same ones:
    # "mlp.a", "mlp.b" this block's own (kept for backward), "mlp.t" a transient shared one.
    if train and xp.__name__ == "numpy":      # keep GELU(h) and GELU'(h); h is transient
        h_out = buffer(ws, "mlp.t", hid, dt, xp, shared=True)
        gelu_bufs = {"out": buffer(ws, "mlp.a", hid, dt, xp),
                     "grad_out": buffer(ws, "mlp.b", hid, dt, xp)}
    else:                                     # keep h and Phi(h); GELU(h) is transient
        h_out = buffer(ws, "mlp.a", hid, dt, xp)
        gelu_bufs = {"out": buffer(ws, "mlp.t", hid, dt, xp, shared=True),
                     "cdf_out": buffer(ws, "mlp.b", hid, dt, xp)}
    h, c1 = linear_forward(x, p["fc1.weight"], p["fc1.bias"], defer_bias=True,
                           out=h_out)                                 # x W_1 (B, T, M)
    g, cg = gelu_forward(h, approximate, bias=p["fc1.bias"], **gelu_bufs)  # GELU(x W_1 + b_1)
    g, cd1 = dropout_forward(g, dropout, rng, train)
    y, c2 = linear_forward(g, p["fc2.weight"], p["fc2.bias"], defer_bias=defer_bias,
                           out=buffer(ws, "mlp.out", x.shape, dt, xp, shared=True))  # (B, T, D)
    if cd1 is None and "cdf_out" in gelu_bufs:
        c2 = (None,) + c2[1:]                  # fc2's input GELU(h): recomputed in backward
    y, cd2 = dropout_forward(y, dropout, rng, train)
    return y, (c1, cg, cd1, c2, cd2)


def mlp_backward(dy, cache, ws=None):
    """dy (B, T, D) -> (dx (B, T, D), grads of fc1 and fc2). With h = x W_1 + b_1 (B, T, M):
    dW_2 = GELU(h)^T dy, db_2 = sum dy;  dh = (dy W_2^T) * GELU'(h) (B, T, M);
    dW_1 = x^T dh, db_1 = sum dh;  dx = dh W_1^T  (the dropout masks applied on the way)."""
    c1, cg, cd1, c2, cd2 = cache
    xp = get_array_module(dy)
    dy, _ = dropout_backward(dy, cd2)
    if c2[0] is None:                                                  # fc2's input GELU(h)
        h = cg[0]
        g = gelu_recompute(cg, out=buffer(ws, "mlp.t", h.shape, h.dtype, xp, shared=True))
        c2 = (g,) + c2[1:]
    hid = dy.shape[:-1] + (c2[1].shape[0],)                            # (B, T, M)
    dh, g2 = linear_backward(dy, c2, dx_out=buffer(ws, "dh", hid, xp.result_type(dy, c2[1]), xp,
                                                    shared=True))
    dh, _ = dropout_backward(dh, cd1)
    dh, _ = gelu_backward(dh, cg, out=dh)                              # in place
    dx, g1 = linear_backward(dh, c1, dx_out=buffer(ws, "mlp.dx", dy.shape, dh.dtype, xp, True))
    return dx, {"fc1.weight": g1["weight"], "fc1.bias": g1["bias"],
                "fc2.weight": g2["weight"], "fc2.bias": g2["bias"]}
