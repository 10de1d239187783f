"""The transformer MLP: fc1 -> GELU -> dropout -> fc2 -> dropout (D -> mlp_dim -> D)."""
from .dropout import dropout_backward, dropout_forward
from .gelu import gelu_backward, gelu_forward
from .linear import linear_backward, linear_forward


def mlp_forward(x, p, dropout=0.0, rng=None, train=False, approximate="none"):
    """x (B, T, D) -> (B, T, D).

    p holds fc1.weight (D, M), fc1.bias (M,), fc2.weight (M, D), fc2.bias (D,)."""
    h, c1 = linear_forward(x, p["fc1.weight"], p["fc1.bias"])         # (B, T, M)
    h, cg = gelu_forward(h, approximate)
    h, cd1 = dropout_forward(h, dropout, rng, train)
    y, c2 = linear_forward(h, p["fc2.weight"], p["fc2.bias"])         # (B, T, D)
    y, cd2 = dropout_forward(y, dropout, rng, train)
    return y, (c1, cg, cd1, c2, cd2)


def mlp_backward(dy, cache):
    c1, cg, cd1, c2, cd2 = cache
    dy, _ = dropout_backward(dy, cd2)
    dh, g2 = linear_backward(dy, c2)
    dh, _ = dropout_backward(dh, cd1)
    dh, _ = gelu_backward(dh, cg)
    dx, g1 = linear_backward(dh, c1)
    return dx, {"fc1.weight": g1["weight"], "fc1.bias": g1["bias"],
                "fc2.weight": g2["weight"], "fc2.bias": g2["bias"]}
