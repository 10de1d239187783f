#!/usr/bin/env python
"""Train the CIFAR-10 ViT (P=4 -> N=64 patches, D=128, depth 6, 4 heads, MLP 512) from scratch,
or with --model hybrid (a BN conv stem + the same encoder) or --model cmt (CMT-CIFAR).

With no flags it runs the recipe that fits the backend (CuPy: full; NumPy: cpu-hour) and says
which. Writes a run folder (config.json, log.jsonl, last.npz, best.npz, summary.json, and
curves.png when matplotlib is installed); Ctrl-C saves a checkpoint, --resume RUN_DIR continues it.
"""
import os
import sys
import time

from minivit import backend, train_args
from minivit.checkpoint import (
    CheckpointMismatch,
    check_params,
    check_same,
    checkpoint_file,
    load_checkpoint,
    load_state,
    run_backend,
)
from minivit.data import load_cifar10
from minivit.models import get_model, model_name, model_shapes
from minivit.progressive import check_schedule, supports
from minivit.recipes import RECIPES, TrainConfig, default_recipe, recipe
from minivit.runner import Run, TrainingInterrupted
from minivit.train import NonFiniteLoss, evaluate, split_data
from minivit.train_args import MODEL_FLAGS, TRAIN_FLAGS, format_schedule, given, model_flags


def parse_args(argv=None):
    return train_args.parse_args(argv, __doc__)


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
        folder = os.path.dirname(args.resume) or "."
        hint = f": --resume {folder}" if os.path.isfile(args.resume) and \
            os.path.isfile(os.path.join(folder, "config.json")) else ""
        raise FileNotFoundError(f"{args.resume} {what}; --resume takes the folder a run wrote"
                                + hint)
    if not os.path.isfile(os.path.join(args.resume, "last.npz")):
        raise FileNotFoundError(f"{args.resume} has no last.npz: the run stopped before its "
                                f"first save, so there is nothing to resume; start it again "
                                f"(--out {args.resume} after removing the folder)")
    if args.out and os.path.realpath(args.out) != os.path.realpath(args.resume):
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
    args.eval_only = checkpoint_file(args.eval_only)   # a run folder: best.npz, else last.npz
    params, _, meta = load_checkpoint(args.eval_only)
    spec = get_model(meta.get("arch", "vit"))
    cfg, tc = spec.from_dict(meta["model"]), TrainConfig(**meta["train"])
    check_params(params, model_shapes(cfg), args.eval_only)
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
    when = f"epoch {meta['epoch'] + 1}, step {meta['step']}" if meta.get("step") else \
        f"epoch {meta['epoch']}"                          # saved mid-epoch (Ctrl-C) or after
    print(f"{args.eval_only} ({when}): test loss {loss:.4f}, "
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
        if tc.recipe == "full" and backend.name() == "numpy" and tc.epochs > 20:
            print("note: the full recipe is made for a GPU (--backend cupy): on NumPy its "
                  f"{tc.epochs} epochs take days; the cpu-hour recipe is the CPU's")
        if tc.precision == "fp16" and backend.name() == "numpy":
            print("note: --precision fp16 on NumPy runs float16 matmuls without BLAS, ~56x "
                  "slower than fp32 (batch 64, CIFAR model); it is meant for --backend "
                  "cupy")
        run = run.resume() if args.resume else run.start()
    except (CheckpointMismatch, FileNotFoundError, FileExistsError, NotADirectoryError,
            ValueError, backend.BackendUnavailable) as e:      # flags, data, run folder: said
        print(f"error: {e}", file=sys.stderr)                  # in a line; an error inside
        return 2                                               # training keeps its traceback
    try:
        summary = run.train()
    except TrainingInterrupted as e:
        print(f"\n{e}")
        return 128 + e.signum                    # the shell's status for the signal: 130, 143
    except NonFiniteLoss as e:
        print(f"\n{e}", file=sys.stderr)
        return 3
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
