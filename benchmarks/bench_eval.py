"""Evaluation speed: the CIFAR model over 5,000 uint8 images (random pixels), as the training run
validates each epoch, with and without a reused Workspace, at a few eval batch sizes.

    python benchmarks/bench_eval.py [--images 5000] [--batches 500,100]
"""
import argparse
import time

import numpy as np

from minivit import ViTConfig, init_params
from minivit.recipes import TrainConfig
from minivit.train import evaluate
from minivit.workspace import Workspace


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--batches", default="500,100")
    args = p.parse_args()
    cfg = ViTConfig.cifar()
    params = init_params(cfg, 0, "float32")
    x = np.random.default_rng(0).integers(0, 256, (args.images, 3, 32, 32), dtype=np.uint8)
    y = np.arange(args.images) % 10
    for bs in (int(b) for b in args.batches.split(",")):
        tc = TrainConfig(eval_batch_size=bs)
        for label, ws in (("fresh arrays", None), ("workspace", Workspace())):
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                evaluate(params, cfg, x, y, tc, workspace=ws)
                times.append(time.perf_counter() - t0)
            print(f"batch {bs:4d}  {label:12s}  {min(times):6.2f} s  "
                  f"({args.images / min(times):.0f} img/s)", flush=True)


if __name__ == "__main__":
    main()
