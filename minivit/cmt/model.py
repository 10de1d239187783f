"""CMT end to end (official CMT.forward_features + head, huawei-noah/Efficient-AI-Backbones
cmt_pytorch/cmt.py):

    stem:   3 x (conv3x3 -> GELU -> BN), the first with stride stem_stride    (B, S, H/2, W/2)
    stage s = a, b, c, d:  patch aggregation conv2x2 stride 2 -> tokens -> LayerNorm,
            then depths[s] CMT blocks, all sharing the stage's bias B = relative_pos_s
    head:   conv1x1 -> fc_dim, BN, Swish, global average pool, dropout, linear -> K logits
B is one parameter used by every block of its stage, so dB is the sum of the blocks' dB.
"""
from ..conv.conv2d import map_to_tokens, tokens_to_map
from ..conv.pooling import gap_backward, gap_forward
from ..conv.unit import conv_backward, conv_forward, conv_unit_backward, conv_unit_forward
from ..layers.block import add_prefix, sub_params
from ..layers.dropout import dropout_backward, dropout_forward
from ..layers.layernorm import layernorm_backward, layernorm_forward
from ..layers.linear import linear_backward, linear_forward
from ..model import check_image_batch
from .block import cmt_block_backward, cmt_block_forward
from .config import STAGES, CMTConfig


def stage_forward(x, p, state, cfg: CMTConfig, i, rates, train, rng):
    """Stage i: map (B, C, H, W) -> map (B, D, H/2, W/2)."""
    L = STAGES[i]
    pe = f"patch_embed_{L}."
    m, c_pe = conv_forward(x, p, pe + "proj.", stride=2)             # 2x2 s2: a reshape + matmul
    hw = m.shape[2:]
    t, c_ln = layernorm_forward(map_to_tokens(m), p[pe + "norm.weight"], p[pe + "norm.bias"],
                                cfg.embed_ln_eps)                     # (B, N, D)
    c_blocks = []
    for j, dp in enumerate(rates):
        b = f"blocks_{L}.{j}."
        t, c = cmt_block_forward(t, sub_params(p, b), sub_params(state, b), p[f"relative_pos_{L}"],
                                 hw, cfg.num_heads[i], cfg.sr_ratios[i], eps=cfg.ln_eps,
                                 drop_path=dp, rng=rng, train=train)
        c_blocks.append(c)
    return tokens_to_map(t, *hw), (c_pe, c_ln, c_blocks, hw, L)


def stage_backward(dm, cache):
    """dmap (B, D, H, W) -> (dx (B, C_in, 2H, 2W), the stage's grads): its blocks in reverse,
    dB = the sum of their dB (one shared B), then LN and the 2x2 stride-2 patch conv."""
    c_pe, c_ln, c_blocks, hw, L = cache
    dt = map_to_tokens(dm)
    grads, dB = {}, 0.0
    for j in reversed(range(len(c_blocks))):
        dt, g = cmt_block_backward(dt, c_blocks[j])
        dB = dB + g.pop("relative_pos")                               # shared B: sum over blocks
        grads.update(add_prefix(g, f"blocks_{L}.{j}."))
    grads[f"relative_pos_{L}"] = dB
    dt, g_ln = layernorm_backward(dt, c_ln)
    dx, g_pe = conv_backward(tokens_to_map(dt, *hw), c_pe)
    grads.update({**add_prefix(g_ln, f"patch_embed_{L}.norm."), **g_pe})
    return dx, grads


def cmt_forward(params, images, cfg: CMTConfig, train=False, rng=None, state=None):
    """images (B, C, H, W) -> logits (B, K), cache. `state` holds every BatchNorm's running
    statistics (updated in place when train=True, read when train=False)."""
    check_image_batch(images, cfg.in_channels, cfg.image_size)
    p, x = params, images
    c_stem = []
    for i in (1, 2, 3):
        x, c = conv_unit_forward(x, p, state, f"stem_conv{i}.", f"stem_norm{i}.",
                                 stride=cfg.stem_stride if i == 1 else 1, padding=1, act="gelu",
                                 act_before_bn=True, train=train)
        c_stem.append(c)
    rates, c_stages, first = cfg.drop_path_rates(), [], 0
    for i, depth in enumerate(cfg.depths):
        x, c = stage_forward(x, p, state, cfg, i, rates[first:first + depth], train, rng)
        c_stages.append(c)
        first += depth
    x, c_fc = conv_unit_forward(x, p, state, "_fc.", "_bn.", act="swish", train=train)
    y, c_gap = gap_forward(x)                                         # (B, fc_dim)
    y, c_drop = dropout_forward(y, cfg.head_dropout, rng, train)
    logits, c_head = linear_forward(y, p["head.weight"], p["head.bias"])
    return logits, {"stem": c_stem, "stages": c_stages,
                    "head": (c_fc, c_gap, c_drop, c_head)}


def cmt_backward(dlogits, cache):
    """dlogits (B, K) -> (dimages, grads for every parameter)."""
    c_fc, c_gap, c_drop, c_head = cache["head"]
    dy, g_head = linear_backward(dlogits, c_head)
    dy, _ = dropout_backward(dy, c_drop)
    dx, _ = gap_backward(dy, c_gap)
    dx, grads = conv_unit_backward(dx, c_fc)
    grads.update(add_prefix(g_head, "head."))
    for c in reversed(cache["stages"]):
        dx, g = stage_backward(dx, c)
        grads.update(g)
    for c in reversed(cache["stem"]):
        dx, g = conv_unit_backward(dx, c)
        grads.update(g)
    return dx, grads


def cmt_attention_maps(cache):
    """LMHSA's probabilities of every block, [(B, heads, N, N / k^2)], stage by stage."""
    return [cb[2]["attn"] for c in cache["stages"] for cb in c[2]]
