"""One encoder block as one share of a training step runs it: a Workspace, one thread, OpenBLAS
at one thread, 64 images (half of batch 128). Small changes to a block's elementwise work are
lost in the noise of a whole step on a shared machine; the best of many block calls is not.

    MINIVIT_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_block.py [--batch 64]
    PYTHONPATH=/tmp/old MINIVIT_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_block.py

(/tmp/old: `git archive` of an older commit.) Prints the best and the median of --reps calls, in
ms: the evaluation forward, and forward(train=True) + backward.
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
    a = ap.parse_args()
    cfg = ViTConfig.cifar()
    p = sub_params(init_params(cfg, zero_head=False), "blocks.0.")
    rng = np.random.default_rng(0)
    shape = (a.batch, cfg.num_tokens, cfg.dim)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    ws = Workspace().scope("blocks.0.")

    def train_step():
        _, cache = block_forward(x, p, cfg.heads, train=True, ws=ws)
        block_backward(dy, cache, ws)
    ev = best_and_median(lambda: block_forward(x, p, cfg.heads, train=False, ws=ws), a.reps)
    tr = best_and_median(train_step, a.reps)
    print(f"{os.path.dirname(minivit.__file__)}: batch {a.batch}, threads "
          f"{os.environ.get('MINIVIT_THREADS', 'all')}; eval forward best {ev[0]:.2f} ms, "
          f"median {ev[1]:.2f}; train forward+backward best {tr[0]:.2f} ms, median {tr[1]:.2f}")


if __name__ == "__main__":
    main()
