"""Training recipes: TrainConfig (everything but the model) and the named presets.

- full:     the GPU recipe (CuPy default): 200 epochs, batch 512, AdamW, RandAugment(2, 9),
            mixup 0.8 / cutmix 1.0, label smoothing 0.1, drop-path 0.1, random erasing 0.25.
            On one H100 (BENCHMARKS.md, fifteenth session): 200 epochs in 16.5 min wall, ~4.2 s
            an epoch; 86.00% test (seed 0).
- cpu-hour: the NumPy default, about an hour on 2 idle CPU cores: 34 epochs with progressive
            resizing (minivit/progressive.py): 16 epochs on images shrunk to 16 px (17 tokens,
            ~4x cheaper a step), 14 at 24 px (~2x cheaper), the last 4 at 32 px, where an epoch
            takes ~150-165 s at ~275-300 img/s (one share of the batch per core). AdamW lr 7e-4
            at batch 64 (1e-3 at batch 128 scaled by sqrt(64/128); batch 64 was better in pilots
            and in the hour), 1 warmup epoch then cosine to 0, weight decay 0.1, label smoothing
            0.1, random crop + flip only: heavy augmentation slows short runs. Measured
            (BENCHMARKS.md) with the current step (LayerNorm folded, GELU' stored): 75.31%,
            75.21%, 75.02% test (seeds 0, 1, 2; 75.18% +- 0.15) in 49.3-50.6 min (thirteenth
            and fourteenth sessions). The tenth session's code: 75.21%, 75.20%, 75.50% (75.30%
            +- 0.17) in 44.7, 46.3 and 58.3 min (the last on a slower machine); seed 2 with the
            twelfth session's GELU: 75.63% in 58.8 min.
            The four extra epochs are the time saved when the training step began to run one
            share of the batch per core. The 30-epoch schedule before it (15/12/3) gave
            74.69% +- 0.35 test over 3 seeds in 49-53 min; the 27-epoch one (14/10/3) 74.1% +-
            0.35. Run E (13/9/4 epochs, weight decay 0.05) gave 73.9%; batch 128 at lr 1e-3 with
            16:14,24:10,32:4 gave 73.3% in 58.7 min. 10 epochs all at 32 px gave 67.7% (~38 min
            of training steps on idle cores, estimated from its one quiet epoch).
- smoke:    an end-to-end check on 1024 images: ~19 s on 2 cores, ~25 s on one (BENCHMARKS.md).
"""
import dataclasses
from dataclasses import dataclass

from .budget import check_budget
from .data.loader import AugmentConfig
from .precision import check_precision


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = "custom"
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3                 # peak learning rate (after warmup)
    min_lr: float = 0.0              # end of the cosine
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    optimizer: str = "adamw"         # "adamw" or "sgd" (momentum 0.9, Nesterov)
    clip_norm: float = 1.0           # global gradient-norm clipping (0: off)
    label_smoothing: float = 0.1
    crop: int = 4
    flip: bool = True
    randaug_n: int = 0
    randaug_m: float = 9.0
    mixup: float = 0.0
    cutmix: float = 0.0
    erase: float = 0.0
    seed: int = 0
    val_split: int = 5000            # training images held out for validation
    limit_train: int | None = None
    limit_test: int | None = None
    classes: tuple | None = None     # CIFAR-10 classes kept, relabelled 0..K-1 in this order
    res_schedule: tuple = ()         # ((size, epochs), ...): progressive resizing; () = full size
    dtype: str = "float32"
    precision: str = "fp32"          # "fp32", "tf32" (CuPy) or "fp16" mixed (minivit/precision.py)
    eval_batch_size: int = 100      # as fast as 500 through the workspace, 1/5 of the memory
    time_budget: float | None = None  # minutes: train as many epochs as fit, at most `epochs`

    def __post_init__(self):
        if self.classes is not None:               # a list after a JSON round trip
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
            if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2 or \
                    not all(0 <= c <= 9 for c in self.classes):
                raise ValueError(f"classes must be 2 or more distinct labels in 0-9, "
                                 f"got {list(self.classes)}")
        object.__setattr__(self, "res_schedule",
                           tuple((int(s), int(n)) for s, n in self.res_schedule))
        if self.res_schedule and sum(n for _, n in self.res_schedule) != self.epochs:
            raise ValueError(f"the resolution schedule covers "
                             f"{sum(n for _, n in self.res_schedule)} epoch(s), the run has "
                             f"{self.epochs} (--res-schedule alone sets --epochs)")
        check_precision(self.precision, self.dtype)
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.time_budget is not None:
            check_budget(self.time_budget, self.epochs, self.warmup_epochs, self.res_schedule)
        if self.lr <= 0 or not 0 <= self.label_smoothing < 1 or self.val_split < 0:
            raise ValueError("need lr > 0, 0 <= label_smoothing < 1 and val_split >= 0")

    @property
    def augment(self) -> AugmentConfig:
        return AugmentConfig(crop=self.crop, flip=self.flip, randaug_n=self.randaug_n,
                             randaug_m=self.randaug_m, mixup=self.mixup, cutmix=self.cutmix,
                             erase=self.erase)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# name -> (model overrides of ViTConfig.cifar(), TrainConfig fields)
RECIPES = {
    "full": ({"drop_path": 0.1},
             dict(epochs=200, batch_size=512, lr=2e-3, min_lr=1e-5, warmup_epochs=10,
                  weight_decay=0.05, label_smoothing=0.1, randaug_n=2, randaug_m=9,
                  mixup=0.8, cutmix=1.0, erase=0.25,
                  eval_batch_size=1000)),    # GPU: 10x fewer launches for validation and test
    "cpu-hour": ({},
                 dict(epochs=34, res_schedule=((16, 16), (24, 14), (32, 4)), batch_size=64,
                      lr=7e-4, warmup_epochs=1, weight_decay=0.1, label_smoothing=0.1)),
    "smoke": ({},
              dict(epochs=2, batch_size=64, lr=1e-3, warmup_epochs=0.5, limit_train=1024,
                   val_split=256, limit_test=512, eval_batch_size=256)),
}


def recipe(name: str, **overrides) -> tuple[dict, TrainConfig]:
    """(model overrides, TrainConfig) of a named recipe, with fields overridden."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: choose from {', '.join(RECIPES)}")
    model, train = RECIPES[name]
    return dict(model), TrainConfig(recipe=name, **{**train, **overrides})


def default_recipe(backend_name: str) -> str:
    """The recipe that fits the machine: the GPU one on CuPy, the one-hour one on NumPy."""
    return "full" if backend_name == "cupy" else "cpu-hour"
