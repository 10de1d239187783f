"""Training-step speed at each image size of a progressive run, for a few batch sizes: what a
recipe's epochs will cost (train_cifar.py's step as it runs: augment the uint8 batch, shrink it
to the size, forward, loss, backward, clip, AdamW). Random pixels; the CIFAR model.

    python benchmarks/bench_train_sizes.py [--batches 64,128] [--sizes 16,24,32] [--steps 11]
                                           [--profile]

Prints the median step time over --steps timed steps (after --warmup untimed ones) and img/s.
--profile: also where each cell's steps go, per op (cProfile, which slows them: the table then
shows profiled times), with the batch making and the optimizer as ops of their own. cProfile
sees the calling thread only: with one share of the batch per thread (minivit.data_parallel) the
per-op rows are share 0's and the serial parts'.
"""
import argparse
import cProfile
import os
import sys
import time

import numpy as np

from minivit import ViTConfig
from minivit.blas import owned_threads
from minivit.data.loader import train_batch
from minivit.optim import adamw_init
from minivit.progressive import shrink_images
from minivit.recipes import recipe
from minivit.train import build_model, derived_rng, train_step
from minivit.workspace import Workspace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_ops import OPS, print_ops  # noqa: E402

STEP_OPS = ["train_batch", "shrink_images", "train_step", "_forward_backward", "clip_scale",
            "global_norm", "adamw_step"] + [op for op in OPS if op != "step"]


def time_steps(batch, size, steps, warmup, x, y, prof=None):
    """Median seconds of one training step at `size` px with batches of `batch` images, inside
    owned_threads() as minivit.runner's loop runs. prof: a cProfile.Profile for the timed steps."""
    cfg = ViTConfig.cifar()
    _, tc = recipe("cpu-hour", batch_size=batch)
    params, ws = build_model(cfg, 0, "float32"), Workspace()
    opt = adamw_init(params)
    order = np.random.default_rng(1).permutation(len(y))
    times = []
    with owned_threads():
        for s in range(warmup + steps):
            idx = order[(s * batch) % len(y):][:batch]
            rng = derived_rng(0, 0, s + 1)
            if prof is not None and s == warmup:
                prof.enable()
            t0 = time.perf_counter()
            xb, tb = train_batch(x[idx], y[idx], rng, tc.augment, cfg.num_classes, "float32")
            full = size == xb.shape[-1]
            xb = xb if full else shrink_images(xb, size)
            train_step(params, opt, xb, tb, cfg, tc, 1e-4, rng, {}, ws, None if full else size)
            times.append(time.perf_counter() - t0)
    if prof is not None:
        prof.disable()
    return float(np.median(times[warmup:]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batches", default="64,128")
    p.add_argument("--sizes", default="16,24,32")
    p.add_argument("--steps", type=int, default=11)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    n = max(batches) * 8
    x = np.random.default_rng(0).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = np.arange(n) % 10
    print("| batch | " + " | ".join(f"{s} px" for s in sizes) + " |")
    print("| ---: |" + " ---: |" * len(sizes))
    profiles = []
    for b in batches:
        cells = []
        for s in sizes:
            prof = cProfile.Profile() if args.profile else None
            t = time_steps(b, s, args.steps, args.warmup, x, y, prof)
            cells.append(f"{1e3 * t:.1f} ms/step, {b / t:.0f} img/s")
            profiles.append((b, s, prof))
        print(f"| {b} | " + " | ".join(cells) + " |", flush=True)
    for b, s, prof in profiles if args.profile else ():
        print(f"\n### batch {b}, {s} px (cProfile, {args.steps} steps)")
        print_ops(prof, args.steps, STEP_OPS)


if __name__ == "__main__":
    main()
