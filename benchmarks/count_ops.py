"""Count the array operations one training step issues: on CuPy, about one kernel launch each.

On the GPU the step is bound by the host issuing CuPy's kernels from Python (BENCHMARKS.md,
"GPU (CuPy)": ~36 us each on the eleventh session's H100), so the number of operations a step
issues is what sets its time there. This runs one step of a recipe (the runner's order: gather,
augment, forward, loss, backward, clip + AdamW) on benchmarks/op_counter.py's counting arrays,
minivit's CuPy path included, on the CPU: no GPU needed. It also runs on older minivit trees
(copy it into a `git worktree` of one), which is how BENCHMARKS.md's "before" columns were made.

    python benchmarks/count_ops.py [--batch 512] [--recipe full] [--top N] [--time-augment]
"""
import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from op_counter import ALLOC, XP, counting, counts, phase, wrap  # noqa: E402


def one_step(recipe, batch, seed=0, precision="fp32"):
    """Run one training step of `recipe` (the runner's order: gather, augment, forward, loss,
    backward, clip + AdamW) on Counted arrays, by phase; returns the Counter. precision "fp16":
    forward to update in the one phase "fp16 step" (minivit.train.train_step's own call)."""
    from minivit import optim, parallel  # noqa: PLC0415
    from minivit.config import ViTConfig  # noqa: PLC0415
    from minivit.data.loader import train_batch  # noqa: PLC0415
    from minivit.layers.loss import cross_entropy  # noqa: PLC0415
    from minivit.models import get_model  # noqa: PLC0415
    from minivit.recipes import recipe as get_recipe  # noqa: PLC0415
    from minivit.train import build_model, train_step  # noqa: PLC0415
    from minivit.workspace import Workspace  # noqa: PLC0415

    model_overrides, tc = get_recipe(recipe, precision=precision)
    cfg = ViTConfig(**model_overrides)
    spec = get_model("vit")
    data = np.random.default_rng(seed)
    images = wrap(data.integers(0, 256, (4 * batch, 3, 32, 32), dtype=np.uint8))
    labels = wrap(data.integers(0, 10, 4 * batch))
    params = {k: wrap(v) for k, v in build_model(cfg, seed, "float32").items()}
    opt = optim.adamw_init(params)
    opt["m"] = {k: wrap(v) for k, v in opt["m"].items()}
    opt["v"] = {k: wrap(v) for k, v in opt["v"].items()}
    ws = Workspace()

    def step():
        from minivit import backend  # noqa: PLC0415
        rng = backend.default_rng(seed)
        with phase("gather"):
            idx = wrap(np.arange(batch))
            xb, yb = images[idx], labels[idx]
        with phase("augment"):
            x, targets = train_batch(xb, yb, rng, tc.augment, 10, "float32")
        if precision == "fp16":
            from minivit.precision import new_loss_scale  # noqa: PLC0415
            with phase("fp16 step"):
                train_step(params, opt, x, targets, cfg, tc, 1e-3, rng, workspace=ws,
                           loss_scale=new_loss_scale("fp16"))
            return
        with phase("forward"):
            logits, cache = spec.forward(params, x, cfg, True, rng, None, workspace=ws)
        with phase("loss"):
            loss, dlogits = cross_entropy(logits, targets, tc.label_smoothing)
            y = targets if targets.ndim == 1 else targets.argmax(axis=1)   # as train_step
            read = XP.stack([XP.asarray(loss, "float64"),
                             (logits.argmax(axis=1) == y).sum().astype("float64")])
            float(read[0])
        with phase("backward"):
            _, grads = spec.backward(dlogits, cache, input_grad=False)
        with phase("optimizer"):
            if hasattr(optim, "pack_adamw"):
                optim.adamw_step(params, grads, opt, 1e-3, weight_decay=tc.weight_decay,
                                 clip_norm=tc.clip_norm or None)
            else:                                # the older code: train_step's call then
                scale = optim.clip_scale(grads, tc.clip_norm)[0]
                optim.adamw_step(params, grads, opt, 1e-3, weight_decay=tc.weight_decay,
                                 grad_scale=scale)

    with counting():
        if hasattr(optim, "pack_adamw"):        # as the runner does (CuPy only; the code
            optim.pack_adamw(params, opt)        # before 2026-11-23 has no packing)
        parallel._run_inline(step)               # warm-up: the workspace's buffers are made
        counts.clear()
        parallel._run_inline(step)
    return Counter(counts)


PHASES = ("gather", "augment", "forward", "loss", "backward", "optimizer")


def report(c, top=0):
    print("| phase | operations (launches) | allocations (no launch) |\n| --- | ---: | ---: |")
    phases = PHASES if c["forward"] else PHASES[:2] + ("fp16 step",)
    for p in phases:
        print(f"| {p} | {c[p]} | {c[('alloc', p)]} |")
    print(f"| **step** | **{sum(c[p] for p in phases)}** | "
          f"{sum(c[('alloc', p)] for p in phases)} |")
    for p in phases[:top and None]:
        if top:
            ops = sorted(((n, k[1]) for k, n in c.items() if isinstance(k, tuple) and k[0] == p
                          and k[1] not in ALLOC), reverse=True)[:top]
            print(f"\n{p}: " + ", ".join(f"{name} {n}" for n, name in ops))


def eval_ops(recipe, images=2000):
    """Operations of evaluating `images` images in the recipe's eval batches (minivit.train.
    evaluate, its CuPy path), after a warm-up pass: (operations, batches)."""
    from minivit import parallel  # noqa: PLC0415
    from minivit.config import ViTConfig  # noqa: PLC0415
    from minivit.recipes import recipe as get_recipe  # noqa: PLC0415
    from minivit.train import build_model, evaluate  # noqa: PLC0415
    from minivit.workspace import Workspace  # noqa: PLC0415
    model_overrides, tc = get_recipe(recipe)
    cfg = ViTConfig(**model_overrides)
    data = np.random.default_rng(0)
    x = wrap(data.integers(0, 256, (images, 3, 32, 32), dtype=np.uint8))
    y = wrap(data.integers(0, 10, images))
    params = {k: wrap(v) for k, v in build_model(cfg, 0, "float32").items()}
    ws = Workspace()
    with counting(), phase("eval"):
        parallel._run_inline(lambda: evaluate(params, cfg, x, y, tc, workspace=ws))
        counts.clear()
        parallel._run_inline(lambda: evaluate(params, cfg, x, y, tc, workspace=ws))
    return counts["eval"], -(-images // tc.eval_batch_size)


def time_augment(recipe, batch, repeats=7):
    """Median seconds of the recipe's augmentation (train_batch) of one batch on plain NumPy."""
    import time  # noqa: PLC0415

    from minivit.backend import default_rng  # noqa: PLC0415
    from minivit.data.loader import train_batch  # noqa: PLC0415
    from minivit.recipes import recipe as get_recipe  # noqa: PLC0415
    tc = get_recipe(recipe)[1]
    data = np.random.default_rng(0)
    images = data.integers(0, 256, (batch, 3, 32, 32), dtype=np.uint8)
    labels = data.integers(0, 10, batch)
    times = []
    for r in range(repeats + 1):
        t = time.perf_counter()
        train_batch(images, labels, default_rng(r), tc.augment, 10, "float32")
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from minivit.recipes import RECIPES  # noqa: PLC0415
    ap.add_argument("--recipe", default="full", choices=list(RECIPES),
                    help="the recipe whose augmentation, model and optimizer run (default: full, "
                    "the GPU recipe)")
    ap.add_argument("--batch", type=int, default=64, help="batch size, >= 2 (the counts do not "
                    "depend on it; --time-augment's time does)")
    ap.add_argument("--top", type=int, default=0, help="list the N commonest operations of "
                    "each phase")
    ap.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                    help="fp16: count the mixed-precision step (minivit.precision)")
    ap.add_argument("--eval", type=int, default=0, metavar="N",
                    help="also count evaluating N images in the recipe's eval batches")
    ap.add_argument("--time-augment", action="store_true", help="also time the augmentation "
                    "of one batch on NumPy (median of 7)")
    args = ap.parse_args(argv)
    if args.batch < 2:
        ap.error("--batch must be at least 2 (mixup pairs the batch with itself reversed)")
    c = one_step(args.recipe, args.batch, precision=args.precision)
    print(f"operations of one `{args.recipe}` training step, batch {args.batch} "
          f"(`python benchmarks/count_ops.py {' '.join(argv or sys.argv[1:])}`):\n")
    report(c, args.top)
    if args.eval:
        ops, batches = eval_ops(args.recipe, args.eval)
        print(f"\nevaluating {args.eval} images in {batches} batches: {ops} operations "
              f"({ops / batches:.0f} a batch)")
    if args.time_augment:
        print(f"\naugmentation of one batch of {args.batch} on NumPy: "
              f"{time_augment(args.recipe, args.batch) * 1e3:.1f} ms (median of 7)")
    return c


if __name__ == "__main__":
    main()
