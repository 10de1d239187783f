"""train_cifar.py's command line: its flags with their help, the argparse types they use, and
which config field (ViTConfig's or TrainConfig's) each flag sets."""
import argparse
import dataclasses

from .models import MODELS
from .precision import PRECISIONS
from .recipes import RECIPES

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


def parse_args(argv=None, description=None):
    """train_cifar.py's flags: the model's, the recipe overrides and the run's."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=list(RECIPES), help="full (GPU, 200 epochs), cpu-hour "
                   "(about an hour on 2 CPU cores, progressive resizing 16 -> 24 -> 32 px) or "
                   "smoke (a quick check on 1024 images); default follows the backend")
    add_model_flags(p.add_argument_group("model (default: the paper's CIFAR example)"))
    add_recipe_flags(p.add_argument_group("recipe overrides (default: the recipe's)"))
    add_run_flags(p.add_argument_group("run"))
    return p.parse_args(argv)


def add_model_flags(group):
    g = group.add_argument
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


def add_recipe_flags(group):
    r = group.add_argument
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
      "--epochs: the length is fitted from the speed of epochs 2-3, before the cosine decays, "
      "then checked against the pace up to four times (needs --warmup 3 or more, --epochs "
      "above 3 and no --res-schedule)")
    r("--optimizer", choices=["adamw", "sgd"], help="adamw or sgd (Nesterov momentum 0.9)")
    r("--clip", type=float, help="global gradient-norm clip (0 = off)")


def add_run_flags(group):
    o = group.add_argument
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
      "its best.npz, else last.npz) on the test set and exit")
    o("--no-progress", action="store_true", help="no progress bars (epoch lines only)")


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
