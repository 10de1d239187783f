"""The CMT block (Guo et al. 2022, sec. 3.2; official Block and Mlp in huawei-noah/Efficient-AI-
Backbones cmt_pytorch/cmt.py), on tokens X (B, N, D) of an H x W map:

    Y  = LPU(X) = DWConv3x3(X) + X                      local perception unit
    Z  = LMHSA(LN(Y)) + Y                               (attention.py)
    X' = IRFFN(LN(Z)) + Z
    IRFFN(X) = BN(Conv1x1(H')),  H' = BN(GELU(DWConv3x3(H) + H)),  H = BN(GELU(Conv1x1(X)))
Each "+" is a residual: its gradient flows both into the branch and straight through, so the
two add (LPU's and IRFFN's shortcut around the depthwise conv included).
"""
from ..conv.conv2d import map_to_tokens, tokens_to_map
from ..conv.unit import (
    bn_backward,
    bn_forward,
    conv_backward,
    conv_forward,
    conv_unit_backward,
    conv_unit_forward,
)
from ..layers.block import add_prefix, sub_params
from ..layers.dropout import drop_path_backward, drop_path_forward
from ..layers.gelu import gelu_backward, gelu_forward
from ..layers.layernorm import layernorm_backward, layernorm_forward
from .attention import lmhsa_backward, lmhsa_forward


def lpu_forward(x, p, hw):
    """Y = DWConv3x3(X) + X: (B, N, D) -> (B, N, D). p: proj.weight (D, 1, 3, 3), proj.bias."""
    m = tokens_to_map(x, *hw)
    y, c = conv_forward(m, p, "proj.", stride=1, padding=1, depthwise=True)
    return map_to_tokens(y + m), (c, hw)


def lpu_backward(dy, cache):
    """dY (B, N, D) -> (dX = DWConv3x3^T(dY) + dY, grads of proj): the conv and the shortcut."""
    c, hw = cache
    dm = tokens_to_map(dy, *hw)
    dx, g = conv_backward(dm, c)
    return map_to_tokens(dx + dm), g


def irffn_forward(x, p, state, hw, train=False):
    """IRFFN: (B, N, D) -> (B, N, D) through a (B, hidden, H, W) map. p, state: mlp.* names."""
    h, c1 = conv_unit_forward(tokens_to_map(x, *hw), p, state, "conv1.0.", "conv1.2.",
                              act="gelu", act_before_bn=True, train=train)
    d, c_dw = conv_forward(h, p, "proj.", stride=1, padding=1, depthwise=True)
    a, c_act = gelu_forward(d + h)                                    # shortcut around DWConv
    a, c_bn = bn_forward(a, p, state, "proj_bn.", train)
    y, c2 = conv_unit_forward(a, p, state, "conv2.0.", "conv2.1.", train=train)
    return map_to_tokens(y), (c1, c_dw, c_act, c_bn, c2, hw)


def irffn_backward(dy, cache):
    """dY (B, N, D) -> (dX (B, N, D), grads). Back through conv2+BN and proj_bn to da; then
    ds = da * GELU'(s) with s = DWConv(h) + h, so dh = DWConv^T(ds) + ds (the shortcut), and
    conv1's unit takes dh."""
    c1, c_dw, c_act, c_bn, c2, hw = cache
    da, g2 = conv_unit_backward(tokens_to_map(dy, *hw), c2)
    da, g_bn = bn_backward(da, c_bn)
    ds, _ = gelu_backward(da, c_act)                                  # d(DWConv(h) + h)
    dh, g_dw = conv_backward(ds, c_dw)
    dx, g1 = conv_unit_backward(dh + ds, c1)
    return map_to_tokens(dx), {**g1, **g_dw, **g_bn, **g2}


def cmt_block_forward(x, p, state, rel_pos, hw, heads, sr, *, eps=1e-6, drop_path=0.0, rng=None,
                      train=False):
    """X (B, N, D) -> X' (B, N, D). p, state: this block's entries without blocks_{s}.{j}.;
    rel_pos: the stage's shared B (heads, N, N / sr^2)."""
    y, c_lpu = lpu_forward(x, p, hw)
    h, c_ln1 = layernorm_forward(y, p["norm1.weight"], p["norm1.bias"], eps)
    a, c_attn = lmhsa_forward(h, sub_params(p, "attn."), sub_params(state, "attn."), rel_pos, hw,
                              heads, sr, train)
    a, c_dp1 = drop_path_forward(a, drop_path, rng, train)
    z = y + a                                                         # Z
    h, c_ln2 = layernorm_forward(z, p["norm2.weight"], p["norm2.bias"], eps)
    m, c_mlp = irffn_forward(h, sub_params(p, "mlp."), sub_params(state, "mlp."), hw, train)
    m, c_dp2 = drop_path_forward(m, drop_path, rng, train)
    return z + m, (c_lpu, c_ln1, c_attn, c_dp1, c_ln2, c_mlp, c_dp2)  # X'


def cmt_block_backward(dout, cache):
    """-> dX and this block's grads; grads["relative_pos"] is its share of the stage's dB."""
    c_lpu, c_ln1, c_attn, c_dp1, c_ln2, c_mlp, c_dp2 = cache
    dm, _ = drop_path_backward(dout, c_dp2)
    dh, g_mlp = irffn_backward(dm, c_mlp)
    dz, g_ln2 = layernorm_backward(dh, c_ln2)
    dz += dout
    da, _ = drop_path_backward(dz, c_dp1)
    dh, g_attn = lmhsa_backward(da, c_attn)
    dy, g_ln1 = layernorm_backward(dh, c_ln1)
    dy += dz
    dx, g_lpu = lpu_backward(dy, c_lpu)
    grads = {**g_lpu, **add_prefix(g_ln1, "norm1."), **add_prefix(g_attn, "attn."),
             **add_prefix(g_ln2, "norm2."), **add_prefix(g_mlp, "mlp.")}
    grads["relative_pos"] = grads.pop("attn.relative_pos")
    return dx, grads
