#!/usr/bin/env python
"""Train the CIFAR-10 ViT (P=4 -> N=64 patches, D=128, depth 6, 4 heads, MLP 512) from scratch,
or with --model hybrid (a BN conv stem + the same encoder) or --model cmt (CMT-CIFAR).

With no flags it runs the recipe that fits the backend (CuPy: full; NumPy: cpu-hour) and says
which. Writes a run folder (config.json, log.jsonl, last.npz, best.npz, summary.json, and
curves.png when matplotlib is installed); Ctrl-C saves a checkpoint, --resume RUN_DIR continues it.
"""
import argparse
import dataclasses
import os
import sys
import time

from minivit import backend
from minivit.checkpoint import (
    CheckpointMismatch,
    check_same,
    load_checkpoint,
    load_state,
    run_backend,
)
from minivit.data import load_cifar10
from minivit.models import MODELS, get_model, model_name
from minivit.precision import PRECISIONS
from minivit.progressive import check_schedule, supports
from minivit.recipes import RECIPES, TrainConfig, default_recipe, recipe
from minivit.runner import Run, TrainingInterrupted
from minivit.train import NonFiniteLoss, evaluate, split_data

MODEL_FLAGS = {"patch": "patch_size", "dim": "dim", "depth": "depth", "heads": "heads",
               "mlp_dim": "mlp_dim", "dropout": "dropout", "drop_path": "drop_path",
               "pool": "pool", "pos_embed": "pos_embed"}
TRAIN_FLAGS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
               "weight_decay": "weight_decay", "warmup": "warmup_epochs",
               "label_smoothing": "label_smoothing", "mixup": "mixup", "cutmix": "cutmix",
               "randaug": "randaug_n", "randaug_m": "randaug_m", "erase": "erase",
               "optimizer": "optimizer", "clip": "clip_norm", "seed": "seed", "dtype": "dtype",
               "precision": "precision",
               "limit_train": "limit_train", "limit_test": "limit_test",
               "val_split": "val_split", "classes": "classes", "res_schedule": "res_schedule",
               "time_budget": "time_budget"}


def positive_int(text):
    """argparse type: an int >= 1 (0 would read as 'no limit' further down)."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def class_list(text):
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected labels like 0,1,2,3,4, got {text!r}") \
            from None


def res_schedule(text):
    """argparse type: "16:6,32:10" -> ((16, 6), (32, 10))."""
    try:
        return tuple((int(a), int(b)) for a, b in (item.split(":") for item in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE:EPOCHS pairs like 16:6,32:10, got "
                                         f"{text!r}") from None


def format_schedule(schedule):
    return ",".join(f"{s}:{n}" for s, n in schedule)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--recipe", choices=list(RECIPES), help="full (GPU, 200 epochs), cpu-hour (about an hour "
      "on 2 CPU cores, progressive resizing 16 -> 24 -> 32 px) or smoke (a quick check on "
      "1024 images); default follows the backend")
    g = p.add_argument_group("model (default: the paper's CIFAR example)").add_argument
    g("--model", choices=list(MODELS), help="vit (default), hybrid (BatchNorm conv stem to 8x8, "
      "then the same encoder on 1x1 patches) or cmt (CMT-CIFAR: CMT-Ti widths, stem stride 1, "
      "k = 4, 2, 1, 1); the flags below apply where the model has that field")
    g("--patch", type=int, help="patch size P (4: N=64 patches of 32x32 images)")
    g("--dim", type=int, help="latent size D (128)")
    g("--depth", type=int, help="number of encoder blocks L (6)")
    g("--heads", type=int, help="attention heads (4)")
    g("--mlp-dim", type=int, help="MLP hidden size (512)")
    g("--dropout", type=float, help="dropout after E_pos and in the MLP (0)")
    g("--drop-path", type=float, help="stochastic depth rate of the last block (recipe)")
    g("--pool", choices=["cls", "gap"], help="classify from the class token or the mean token")
    g("--pos-embed", choices=["none", "1d", "2d", "rel"], help="position embedding (App. D.4): "
      "none, learned 1-D (default), learned 2-D rows+columns, or relative")
    r = p.add_argument_group("recipe overrides (default: the recipe's)").add_argument
    r("--epochs", type=int, help="training epochs")
    r("--batch-size", type=int,
      help="batch size (the recipe's lr scales linearly with it unless --lr is given)")
    r("--lr", type=float, help="peak learning rate after warmup")
    r("--weight-decay", type=float, help="decoupled weight decay (AdamW)")
    r("--warmup", type=float, help="linear warmup, in epochs, before the cosine decay")
    r("--label-smoothing", type=float, help="label smoothing epsilon")
    r("--mixup", type=float, help="mixup Beta(alpha, alpha); 0 = off")
    r("--cutmix", type=float, help="cutmix Beta(alpha, alpha); 0 = off")
    r("--randaug", type=int, help="RandAugment ops per image; 0 = off")
    r("--randaug-m", type=float, help="RandAugment magnitude (0-30)")
    r("--erase", type=float, help="random-erasing probability")
    r("--res-schedule", type=res_schedule, metavar="SIZE:EPOCHS,...", help="progressive "
      "resizing, e.g. 16:6,32:10 = 6 epochs on images shrunk to 16 px, then 10 at 32 px "
      "(sets --epochs to the sum; 32:N = full size throughout)")
    r("--time-budget", type=float, metavar="MINUTES", help="train as many epochs as fit in "
      "MINUTES (training, validation, checkpoints; not loading or the final test), at most "
      "--epochs: the length is fixed from the speed of epochs 2-3, before the cosine decays "
      "(needs --warmup 3 or more, --epochs above 3 and no --res-schedule)")
    r("--optimizer", choices=["adamw", "sgd"], help="adamw or sgd (Nesterov momentum 0.9)")
    r("--clip", type=float, help="global gradient-norm clip (0 = off)")
    o = p.add_argument_group("run").add_argument
    o("--backend", choices=["numpy", "cupy"], help="array backend (default: with --resume the "
      "run's own, else $MINIVIT_BACKEND or numpy)")
    o("--dtype", choices=["float32", "float64"], help="parameter and activation dtype")
    o("--precision", choices=PRECISIONS, help="fp32 (default); tf32: CuPy matmuls on TF32 "
      "tensor cores; fp16: float16 forward/backward with float32 master weights and dynamic "
      "loss scaling (~56x slower than fp32 on NumPy, which has no float16 BLAS: for CuPy)")
    o("--seed", type=int, help="seed of the initial weights, shuffling and augmentation")
    o("--data-dir", help="folder with cifar-10-python.tar.gz or cifar-10-batches-py/ "
      "(default: $MINIVIT_DATA or ~/.cache/minivit)")
    o("--out", help="run folder (default: runs/RECIPE-TIMESTAMP)")
    o("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.npz, on "
      "the backend it ran on unless --backend is given")
    o("--limit-train", type=positive_int, help="use only the first N training images")
    o("--limit-test", type=positive_int, help="evaluate only the first N test images")
    o("--classes", type=class_list, help="train and test on these CIFAR-10 classes only, "
      "e.g. 0,1,2,3,4 (relabelled 0..K-1 in this order; the head gets K outputs)")
    o("--val-split", type=int, help="training images held out for validation "
      "(the recipe's: 5000, 256 for smoke)")
    o("--eval-only", metavar="CHECKPOINT", help="evaluate a checkpoint (.npz, or a run folder: "
      "its best.npz) on the test set and exit")
    o("--no-progress", action="store_true", help="no progress bars (epoch lines only)")
    return p.parse_args(argv)


def given(args, flags):
    """{config field: value} of the flags the user actually gave."""
    return {field: getattr(args, f) for f, field in flags.items() if getattr(args, f) is not None}


def model_flags(args, spec):
    """The model flags given, refused with a clear error if --model has no such field."""
    over = given(args, MODEL_FLAGS)
    fields = {f.name for f in dataclasses.fields(spec.config_class)}
    bad = [f"--{k.replace('_', '-')}" for k, v in MODEL_FLAGS.items() if v in over and
           v not in fields]
    if bad:
        raise ValueError(f"--model {spec.name} does not take {', '.join(bad)}")
    return over


def schedule_flags(train_over, base, name, model, pos_embed):
    """--res-schedule sets --epochs to its sum; --epochs alone trains at full size throughout
    (the recipe's schedule, made for its own length, is dropped, saying so)."""
    if "res_schedule" in train_over:
        train_over.setdefault("epochs", sum(n for _, n in train_over["res_schedule"]))
    elif base.res_schedule and "epochs" in train_over:
        train_over["res_schedule"] = ()
        print(f"--epochs {train_over['epochs']} without --res-schedule: all at full size "
              f"(recipe {name}'s schedule is {format_schedule(base.res_schedule)})")
    elif base.res_schedule and not supports(model, pos_embed):
        raise ValueError(f"recipe {name} shrinks the images of its first epochs "
                         f"(--res-schedule {format_schedule(base.res_schedule)}), which needs "
                         f"the plain ViT with --pos-embed 1d or none; give --epochs N to train "
                         + (f"--model {model}" if model != "vit" else f"--pos-embed {pos_embed}")
                         + " at full size throughout")


def build_config(args):
    """(model config, TrainConfig) from --model, the recipe and the flags given."""
    name = args.recipe or default_recipe(backend.name())
    why = "picked with --recipe" if args.recipe else f"the default on {backend.name()}"
    print(f"recipe: {name} ({why}; --recipe {'|'.join(RECIPES)} picks another)")
    model_over, base = recipe(name)
    train_over = given(args, TRAIN_FLAGS)
    schedule_flags(train_over, base, name, args.model or "vit", args.pos_embed or "1d")
    if "batch_size" in train_over and "lr" not in train_over:
        train_over["lr"] = base.lr * train_over["batch_size"] / base.batch_size
        print(f"lr scaled with the batch size: {train_over['lr']:.3g}")
    spec = get_model(args.model or "vit")
    tc = base.replace(**train_over)
    if tc.classes:
        model_over["num_classes"] = len(tc.classes)
    cfg = spec.cifar(**{**model_over, **model_flags(args, spec)})
    if tc.res_schedule and "res_schedule" not in train_over:    # the recipe's, not the user's
        try:
            check_schedule(tc.res_schedule, cfg, spec.name)
        except ValueError as e:
            raise ValueError(f"recipe {name}'s resolution schedule (--res-schedule "
                             f"{format_schedule(tc.res_schedule)}) does not fit this model: {e}. "
                             f"Give --epochs N to train at full size throughout, or a "
                             f"--res-schedule that fits") from e
    return cfg, tc


def resume_config(args):
    """Model and training config saved in RUN_DIR; flags that contradict them are refused."""
    import json
    path = os.path.join(args.resume, "config.json")
    if not os.path.isfile(path):
        what = "is not a run folder (no config.json)" if os.path.isdir(args.resume) else \
            "is a file" if os.path.isfile(args.resume) else "does not exist"
        hint = f": --resume {os.path.dirname(args.resume) or '.'}" \
            if os.path.isfile(args.resume) else ""
        raise FileNotFoundError(f"{args.resume} {what}; --resume takes the folder a run wrote"
                                + hint)
    if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
        raise ValueError(f"--out {args.out} with --resume {args.resume}: a resumed run goes on "
                         f"writing its own folder; drop --out (or start a new run there)")
    with open(path) as f:
        saved = json.load(f)
    arch = saved.get("arch", "vit")
    if args.model and args.model != arch:
        raise CheckpointMismatch(f"run {args.resume} trains --model {arch}, not {args.model}")
    cfg, tc = get_model(arch).from_dict(saved["model"]), TrainConfig(**saved["train"])
    if args.recipe and args.recipe != tc.recipe:
        raise CheckpointMismatch(f"run {args.resume} trains recipe {tc.recipe}, not "
                                 f"{args.recipe}; a new recipe is a new run (--out)")
    for part, flags in (("model", MODEL_FLAGS), ("train", TRAIN_FLAGS)):
        here = json.loads(json.dumps(given(args, flags)))     # tuples as the saved JSON lists
        check_same({k: saved[part].get(k) for k in here}, here, f"run {args.resume}")
    print(f"resuming {args.resume} (recipe {tc.recipe})")
    return cfg, tc


def eval_only(args):
    if os.path.isdir(args.eval_only):              # a run folder: its best.npz
        args.eval_only = os.path.join(args.eval_only, "best.npz")
    params, _, meta = load_checkpoint(args.eval_only)
    spec = get_model(meta.get("arch", "vit"))
    cfg, tc = spec.from_dict(meta["model"]), TrainConfig(**meta["train"])
    check_same({k: meta["model"].get(k) for k in given(args, MODEL_FLAGS)},
               given(args, MODEL_FLAGS), f"checkpoint {args.eval_only}")
    tc = tc.replace(limit_test=args.limit_test)
    data = split_data(load_cifar10(args.data_dir), tc)
    params = {k: backend.to_device(v, tc.dtype) for k, v in params.items()}
    state = {k: backend.to_device(v, tc.dtype) for k, v in load_state(args.eval_only).items()}
    x, y = (backend.to_device(a) for a in data["test"])
    print(f"evaluating {args.eval_only} on {len(y)} test images"
          + ("" if args.limit_test else " (all of them; --limit-test N for fewer)"))
    loss, acc = evaluate(params, cfg, x, y, tc, state)
    print(f"{args.eval_only} (epoch {meta['epoch']}): test loss {loss:.4f}, "
          f"accuracy {acc:.4f} on {len(y)} images")
    return 0


def pick_backend(args):
    """--backend, else $MINIVIT_BACKEND (explicit choices); else, for --resume, the backend the
    run last saved on, so a GPU run is not continued on NumPy by accident; else numpy."""
    if args.backend:
        backend.use(args.backend)
        return ""
    backend.check()                                    # a MINIVIT_BACKEND that cannot run
    saved = run_backend(args.resume) if args.resume and \
        not os.environ.get("MINIVIT_BACKEND") else None
    if not saved or saved == backend.name():
        return " (the run's)" if saved else ""
    try:
        backend.use(saved)
    except backend.BackendUnavailable as e:
        raise backend.BackendUnavailable(
            f"run {args.resume} ran on {saved}, which cannot run here ({e}); to continue it "
            f"on NumPy, add --backend numpy") from None
    return " (the run's backend)"



def main(argv=None):
    args = parse_args(argv)
    try:
        why = pick_backend(args)
        print(f"backend: {backend.name()}{why}")
        if args.eval_only:
            return eval_only(args)
        cfg, tc = resume_config(args) if args.resume else build_config(args)
        run_dir = args.resume or args.out or os.path.join(
            "runs", f"{tc.recipe}-{time.strftime('%Y%m%d-%H%M%S')}")
        run = Run(cfg, tc, run_dir, load_cifar10(args.data_dir), bar=not args.no_progress)
        name = model_name(cfg)
        tokens = f", z0 is {cfg.num_tokens}x{cfg.dim}" if name == "vit" else ""
        print(f"model: {name}, {get_model(name).count(cfg):,} parameters{tokens}; "
              f"{run.n['train']} train / {run.n['val']} val / {run.n['test']} test images; "
              f"{'up to ' if tc.time_budget else ''}{tc.epochs} epochs of {len(run.steps)} steps "
              f"(batch {tc.batch_size}"
              f"{f'; as many as fit in {tc.time_budget:g} min' if tc.time_budget else ''}); "
              f"run folder {run_dir}")
        if tc.res_schedule:
            print("image size per epoch (progressive resizing): " +
                  ", ".join(f"{n} at {s} px" for s, n in tc.res_schedule))
        if tc.precision == "fp16" and backend.name() == "numpy":
            print("note: --precision fp16 on NumPy runs float16 matmuls without BLAS, ~56x "
                  "slower than fp32 (batch 64, CIFAR model); it is meant for --backend "
                  "cupy")
        run = run.resume() if args.resume else run.start()
        summary = run.train()
    except TrainingInterrupted as e:
        print(f"\n{e}")
        return 130
    except NonFiniteLoss as e:
        print(f"\n{e}", file=sys.stderr)
        return 3
    except (CheckpointMismatch, FileNotFoundError, FileExistsError, NotADirectoryError,
            ValueError, backend.BackendUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_summary(summary, run_dir)
    return 0


def print_summary(s, run_dir):
    budget = s.get("time_budget")
    print(f"done: {s['epochs']} epochs in {s['train_seconds'] / 60:.1f} min of training"
          + (f" ({s['epochs_wall_seconds'] / 60:.1f} min with validation and checkpoints; "
             f"budget {budget['budget_min']:g} min)" if budget else ""))
    print(f"  final: val acc {s['final_val_acc']:.4f}, test acc {s['final_test_acc']:.4f}")
    if s.get("best_test_acc") is not None:
        print(f"  best (epoch {s['best_epoch']}, chosen on validation): val acc "
              f"{s['best_val_acc']:.4f}, test acc {s['best_test_acc']:.4f}")
    print(f"  run folder: {run_dir} (summary.json, log.jsonl, last.npz, best.npz"
          f"{', curves.png' if s.get('curves') else ''})")


if __name__ == "__main__":
    sys.exit(main())
