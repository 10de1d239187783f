"""All the paper's pictures of a trained model, as PNGs:

    python -m minivit.analyze CHECKPOINT.npz --out DIR [--data CIFAR_DIR] [--images N]

writes DIR/rollout.png (Fig. 6), attention_distance.png, pos_embed_similarity.png and
embedding_filters.png (Fig. 7), and DIR/analysis.json with the numbers drawn. Without --data
the images are random noise (the embedding figures do not depend on them)."""
import argparse
import json
import os
import sys

import numpy as np

from .analysis import (
    embedding_filters,
    mean_attention_distance,
    neighbour_similarity,
    patch_position_embeddings,
    pos_embed_similarity,
    rollout_map,
)
from .backend import to_device, to_numpy
from .checkpoint import load_vit_checkpoint
from .model import attention_maps, vit_forward


def read_checkpoint(path):
    """A train_cifar.py checkpoint (or run folder) -> (params on the backend, cfg), every
    parameter's shape checked against the config saved with it."""
    host, cfg, _ = load_vit_checkpoint(path)
    return {k: to_device(v) for k, v in host.items()}, cfg


def attention_statistics(params, cfg, images, batch_size=32):
    """Rollout maps (B, h, w) and mean attention distance (L, heads) over `images`, batched."""
    maps, dist = [], 0.0
    for s in range(0, len(images), batch_size):
        x = to_device(images[s:s + batch_size], dtype=params["patch_embed.weight"].dtype)
        att = attention_maps(vit_forward(params, x, cfg)[1])
        maps.append(to_numpy(rollout_map(att, cfg.grid, cfg.pool == "cls")))
        dist = dist + mean_attention_distance(att, cfg.grid, cfg.patch_size,
                                              cfg.pool == "cls") * len(x)
    return np.concatenate(maps), dist / len(images)


def analyze(params, cfg, images, out_dir, titles=None, show=8):
    """Write every figure for (params, cfg) into out_dir; returns the numbers as a dict."""
    from .analysis import plots
    plots.require_matplotlib()
    os.makedirs(out_dir, exist_ok=True)
    images = np.asarray(images)
    rollout, dist = attention_statistics(params, cfg, images)
    plots.plot_rollout(images[:show], rollout[:show], os.path.join(out_dir, "rollout.png"),
                       None if titles is None else titles[:show])
    plots.plot_attention_distance(dist, os.path.join(out_dir, "attention_distance.png"),
                                  max(cfg.hw))
    comps, ratio = embedding_filters(params["patch_embed.weight"], cfg.patch_size,
                                     cfg.in_channels)
    plots.plot_filters(comps, ratio, os.path.join(out_dir, "embedding_filters.png"))
    result = {"mean_attention_distance_px": np.asarray(dist, float).round(3).tolist(),
              "filter_variance_ratio": np.asarray(ratio, float).round(4).tolist(),
              "images": len(images)}
    if cfg.pos_embed in ("1d", "2d"):
        sim = pos_embed_similarity(patch_position_embeddings(params, cfg))
        plots.plot_pos_similarity(sim, os.path.join(out_dir, "pos_embed_similarity.png"))
        result["pos_similarity_neighbour_mean"] = neighbour_similarity(sim)
    with open(os.path.join(out_dir, "analysis.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def load_images(args, cfg):
    """(images, titles): the first --images CIFAR-10 test images from --data (normalised as
    in training), or random noise without --data."""
    if args.data is None:
        print("no --data: using random images (rollout and distance then show no content)",
              file=sys.stderr)
        x = np.random.default_rng(0).standard_normal((args.images, cfg.in_channels, *cfg.hw))
        return x.astype(np.float32), None
    try:
        from .data import eval_batch, load_cifar10
    except ImportError as e:
        raise ValueError("--data needs minivit.data (the CIFAR-10 loader)") from e
    try:
        _, _, x_te, y_te = load_cifar10(args.data, download_ok=False)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from e
    x = np.asarray(eval_batch(x_te[:args.images]))
    if tuple(x.shape[2:]) != cfg.hw:
        from .transfer.resize import resize_images
        x = resize_images(x, cfg.hw)
    return x, [CIFAR10_CLASSES[int(i)] for i in y_te[:args.images]]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m minivit.analyze", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a train_cifar.py checkpoint of a ViT (.npz, or a run "
                    "folder: its best.npz, else last.npz)")
    ap.add_argument("--out", required=True, help="folder for the PNGs")
    ap.add_argument("--data", default=None, help="folder with cifar-10-python.tar.gz or "
                    "cifar-10-batches-py/: its first test images are drawn")
    ap.add_argument("--images", type=int, default=128, help="images for the attention figures")
    args = ap.parse_args(argv)
    try:
        params, cfg = read_checkpoint(args.checkpoint)
        images, titles = load_images(args, cfg)
        result = analyze(params, cfg, images, args.out, titles)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from e
    print(json.dumps({k: v for k, v in result.items() if k != "filter_variance_ratio"}))
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
