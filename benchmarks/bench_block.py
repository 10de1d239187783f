"""One encoder block as one share of a training step runs it: a Workspace, one thread, OpenBLAS
at one thread, 64 images (half of batch 128). Small changes to a block's elementwise work are
lost in the noise of a whole step on a shared machine; the best of many block calls is not.

    MINIVIT_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_block.py [--batch 64]
    PYTHONPATH=/tmp/old MINIVIT_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_block.py

(/tmp/old: `git archive` of an older commit.) Prints the best and the median of --reps calls, in
ms: the evaluation forward, and forward(train=True) + backward. --breakdown: the evaluation
forward's pieces one by one (best of --reps each), the matmuls with their GFLOP/s.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workers import timed  # noqa: E402 - the benchmarks' one timing loop


def best_and_median(fn, reps):
    ts = timed(fn, reps, 1, 0.0)                      # one warm-up call, then reps timed calls
    return min(ts) * 1e3, float(np.median(ts)) * 1e3


def main():
    import minivit
    from minivit import ViTConfig, init_params
    from minivit.layers.block import block_backward, block_forward, sub_params
    from minivit.workspace import Workspace
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--breakdown", action="store_true", help="time the forward's pieces")
    a = ap.parse_args()
    cfg = ViTConfig.cifar()
    p = sub_params(init_params(cfg, zero_head=False), "blocks.0.")
    rng = np.random.default_rng(0)
    shape = (a.batch, cfg.num_tokens, cfg.dim)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    ws = Workspace().scope("blocks.0.")
    if a.breakdown:
        return breakdown(p, x, cfg.heads, a.reps)

    def train_step():
        _, cache = block_forward(x, p, cfg.heads, train=True, ws=ws)
        block_backward(dy, cache, ws)
    ev = best_and_median(lambda: block_forward(x, p, cfg.heads, train=False, ws=ws), a.reps)
    tr = best_and_median(train_step, a.reps)
    print(f"{os.path.dirname(minivit.__file__)}: batch {a.batch}, threads "
          f"{os.environ.get('MINIVIT_THREADS', 'all')}; eval forward best {ev[0]:.2f} ms, "
          f"median {ev[1]:.2f}; train forward+backward best {tr[0]:.2f} ms, median {tr[1]:.2f}")


def breakdown(p, x, heads, reps):
    """The evaluation forward of one block, piece by piece, on buffers as the block uses them."""
    from minivit.layers.attention import head_view, softmax_forward, split_heads
    from minivit.layers.block import _folded
    from minivit.layers.gelu import gelu_forward
    from minivit.layers.layernorm import layernorm_forward
    from minivit.layers.linear import linear_forward
    from minivit.parallel import bmm
    B, T, D = x.shape
    pa, _ = _folded(p, "norm1.", "attn.", "qkv.")
    pm, _ = _folded(p, "norm2.", "mlp.", "fc1.")
    M = pm["fc1.weight"].shape[1]
    e = lambda *shape: np.empty(shape, np.float32)            # noqa: E731
    xhat, qkv, A, ctx, o, h, g, c = (e(B, T, D), e(B, T, 3 * D), e(B, heads, T, T), e(B, T, D),
                                     e(B, T, D), e(B, T, M), e(B, T, M), e(B, T, M))
    q, k, v = split_heads(qkv, heads)
    mm = 2 * B * T * D                                 # flops of a (B*T, D) @ (D, 1) product
    pieces = [  # (name, call, flops or 0)
        ("LayerNorm (x2 in a block)", lambda: layernorm_forward(x, None, None, xhat_out=xhat), 0),
        ("z U_qkv + b", lambda: linear_forward(x, pa["qkv.weight"], pa["qkv.bias"], out=qkv),
         mm * 3 * D),
        ("q k^T (batched)", lambda: bmm(q, k.transpose(0, 1, 3, 2), out=A), 2 * B * D * T * T),
        ("softmax", lambda: softmax_forward(A, 0.17, out=A), 0),
        ("A v (batched)", lambda: bmm(A, v, out=head_view(ctx, heads)), 2 * B * D * T * T),
        ("ctx U_msa + b", lambda: linear_forward(ctx, pa["proj.weight"], pa["proj.bias"], out=o),
         mm * D),
        ("x W_1 (bias in GELU's pass)", lambda: linear_forward(
            x, pm["fc1.weight"], None, out=h), mm * M),
        ("GELU(h + b_1)", lambda: gelu_forward(h, bias=pm["fc1.bias"], out=g, cdf_out=c), 0),
        ("GELU(h) W_2 + b", lambda: linear_forward(g, pm["fc2.weight"], pm["fc2.bias"], out=o),
         2 * B * T * M * D),
    ]
    ms = {n: best_and_median(f, reps)[0] for n, f, _ in pieces}
    ms["LayerNorm (x2 in a block)"] *= 2
    total = sum(ms.values())
    print(f"eval forward of one block, batch {B}, threads "
          f"{os.environ.get('MINIVIT_THREADS', 'all')}: pieces best of {reps}, sum {total:.2f} ms")
    for n, _, flops in pieces:
        rate = f", {flops / ms[n] / 1e6:.0f} GFLOP/s" if flops else ""
        print(f"  {n:28s} {ms[n]:6.2f} ms  {100 * ms[n] / total:4.1f}%{rate}")


if __name__ == "__main__":
    main()
