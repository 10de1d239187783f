#!/usr/bin/env python
"""Plain ViT vs hybrid vs CMT-CIFAR on 32 px images: parameters, forward FLOPs counted
analytically from the shapes (cross-checked against torch.utils.flop_counter on the plain
PyTorch references in tests/ when torch is installed), and minivit's training-step speed
(forward + backward, img/s) on this machine.

FLOPs = 2 x multiply-accumulates of every convolution and matrix product (attention's
scores and A v included); norms, activations, softmax and additions are not counted (as
torch's counter and the papers' tables do). Usage:
    PYTHONPATH=. python benchmarks/conv_models.py [--batch 32] [--reps 3]
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

from minivit import ViTConfig, cross_entropy
from minivit.backend import default_rng
from minivit.hybrid import HybridConfig
from minivit.models import get_model


def vit_macs(cfg: ViTConfig) -> int:
    T, D, M, N = cfg.num_tokens, cfg.dim, cfg.mlp_dim, cfg.num_patches
    block = T * D * 3 * D + 2 * T * T * D + T * D * D + 2 * T * D * M
    return N * cfg.patch_dim * D + cfg.depth * block + D * cfg.num_classes


def hybrid_macs(cfg: HybridConfig) -> int:
    macs, c_in, side = 0, cfg.in_channels, cfg.image_size
    for c_out, s in zip(cfg.stem_channels, cfg.stem_strides, strict=True):
        side = (side - 1) // s + 1
        macs += side * side * c_out * c_in * 9
        c_in = c_out
    return macs + vit_macs(cfg.vit)


def cmt_macs(cfg) -> int:
    S, side = cfg.stem_channel, cfg.stem_size
    macs = side * side * S * (cfg.in_channels + 2 * S) * 9                  # three 3x3 convs
    c_in = S
    for i in range(4):
        D, N, Nk, k, Hd = (cfg.embed_dims[i], cfg.num_tokens(i), cfg.num_keys(i),
                           cfg.sr_ratios[i], cfg.hidden_dim(i))
        macs += N * D * c_in * 4                                             # 2x2 patch conv
        block = (N * D * 9                                                   # LPU
                 + N * D * D + (Nk * D * k * k if k > 1 else 0)              # q, key reduction
                 + 2 * Nk * D * D + 2 * N * Nk * D + N * D * D               # k, v, qk^T, Av, proj
                 + 2 * N * D * Hd + N * Hd * 9)                              # IRFFN
        macs += cfg.depths[i] * block
        c_in = D
    return macs + cfg.num_tokens(3) * c_in * cfg.fc_dim + cfg.fc_dim * cfg.num_classes


MACS = {"vit": vit_macs, "hybrid": hybrid_macs, "cmt": cmt_macs}


def torch_flops(name, cfg):
    """Forward FLOPs of the PyTorch reference by torch.utils.flop_counter, or None."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from torch_conv_models import TorchCMT, TorchHybrid
    from torch_vit import TorchViT
    model = {"vit": TorchViT, "hybrid": TorchHybrid, "cmt": TorchCMT}[name](cfg).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    return counter.get_total_flops()


def step_img_per_s(name, batch, reps):
    spec = get_model(name)
    cfg = spec.cifar()
    params, state = spec.init(cfg, 0, "float32"), spec.init_state(cfg, "float32")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    times = []
    for _ in range(reps + 1):                                   # the first is a warm-up
        t = time.perf_counter()
        logits, cache = spec.forward(params, x, cfg, True, default_rng(0), state)
        spec.backward(cross_entropy(logits, y)[1], cache)
        times.append(time.perf_counter() - t)
    return batch / float(np.median(times[1:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, numpy {np.__version__}; "
          f"float32, batch {args.batch}, median of {args.reps} training steps")
    print("| model | parameters | GFLOPs / image (analytic) | torch counter | train img/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, macs in MACS.items():
        spec = get_model(name)
        cfg = spec.cifar()
        flops = 2 * macs(cfg)
        ref = torch_flops(name, cfg)
        speed = step_img_per_s(name, args.batch, args.reps)
        print(f"| {name} | {spec.count(cfg):,} | {flops / 1e9:.3f} | "
              f"{'n/a' if ref is None else f'{ref / 1e9:.3f}'} | {speed:.1f} |", flush=True)


if __name__ == "__main__":
    main()
