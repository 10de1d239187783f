"""Where a minivit training step spends its time, per op: cProfile over a few steps.

    python benchmarks/profile_ops.py [--batch 128] [--steps 3] [--no-workspace]
Prints ms per step for each layer function (cumulative: matmuls inside a layer count there;
with the thread pool, the time is wall time seen by the calling thread).
"""
import argparse
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OPS = ["vit_forward", "vit_backward", "linear_forward", "linear_backward", "gelu_forward",
       "gelu_backward", "layernorm_forward", "layernorm_backward", "softmax_forward",
       "softmax_backward", "attention_forward", "attention_backward", "mlp_forward",
       "mlp_backward", "block_forward", "block_backward", "bmm", "cross_entropy", "step"]


def main():
    import numpy as np

    from minivit import ViTConfig, cross_entropy, init_params, vit_backward, vit_forward
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from workers import adamw_for_minivit, make_workspace
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--no-workspace", action="store_true")
    ap.add_argument("--all-tokens", action="store_true",
                    help="the last block for every token (default: the class token alone)")
    a = ap.parse_args()
    cfg = ViTConfig.cifar()
    params = init_params(cfg, dtype="float32", zero_head=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, a.batch)
    opt, _ = adamw_for_minivit(params)
    ws = make_workspace({"workspace": not a.no_workspace})
    kw = {} if ws is None else {"workspace": ws}

    def train_step():
        logits, cache = vit_forward(params, x, cfg, train=True, all_tokens=a.all_tokens, **kw)
        _, dl = cross_entropy(logits, y)
        _, grads = vit_backward(dl, cache, **({"input_grad": False} if kw else {}))
        opt(params, grads, 1e-4)
    train_step()
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    for _ in range(a.steps):
        train_step()
    prof.disable()
    wall = (time.perf_counter() - t) / a.steps
    print(f"batch {a.batch}: {wall * 1e3:.0f} ms/step ({a.batch / wall:.1f} img/s)")
    print_ops(prof, a.steps)


def print_ops(prof, steps, ops=OPS):
    """A markdown table of calls and cumulative ms per step of each op in `ops` (by function
    name) from a cProfile.Profile that ran `steps` steps."""
    st = pstats.Stats(prof).stats
    print("| op | calls/step | ms/step (cumulative) |\n|---|---|---|")
    for op in ops:
        hits = [(v[1], v[3]) for k, v in st.items() if k[2] == op]
        if hits:
            n, cum = sum(h[0] for h in hits), sum(h[1] for h in hits)
            print(f"| {op} | {n / steps:.0f} | {cum / steps * 1e3:.1f} |")


if __name__ == "__main__":
    main()
