"""Flip test-time augmentation: does averaging a checkpoint's class probabilities over each image
and its mirror image (x[..., ::-1]) raise accuracy over the plain prediction? An accuracy check,
not a speed benchmark; it reads the run's own validation and test splits (BENCHMARKS.md, eighth
session).

    python benchmarks/eval_flip.py RUN_DIR/last.npz [--data-dir DIR]
"""
import argparse

import numpy as np

from minivit.checkpoint import load_checkpoint
from minivit.data import load_cifar10
from minivit.data.loader import eval_batch
from minivit.models import get_model, predict_probs
from minivit.recipes import TrainConfig
from minivit.train import split_data


def accuracies(params, cfg, x_u8, y, batch=100):
    """(plain, mirrored, mean of both) accuracy of a ViT on uint8 images."""
    plain, mirrored = [], []
    for s in range(0, len(y), batch):
        xb = eval_batch(x_u8[s:s + batch])
        plain.append(predict_probs(params, xb, cfg, None, batch))
        mirrored.append(predict_probs(params, np.ascontiguousarray(xb[..., ::-1]), cfg, None,
                                      batch))
    p0, p1 = np.concatenate(plain), np.concatenate(mirrored)
    return tuple(float((p.argmax(1) == y).mean()) for p in (p0, p1, p0 + p1))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    params, _, meta = load_checkpoint(args.checkpoint)
    cfg = get_model(meta.get("arch", "vit")).from_dict(meta["model"])
    data = split_data(load_cifar10(args.data_dir), TrainConfig(**meta["train"]))
    for split in ("val", "test"):
        plain, mirrored, both = accuracies(params, cfg, *data[split])
        print(f"{split}: plain {plain:.4f}, mirrored {mirrored:.4f}, mean of both {both:.4f} "
              f"({len(data[split][1])} images)")


if __name__ == "__main__":
    main()
