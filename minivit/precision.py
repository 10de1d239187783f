"""Training precision: float32, TF32 matmuls (CuPy), or float16 mixed precision.

- "fp32": everything in the run's dtype (the default).
- "tf32": float32 arrays; cuBLAS may round matmul inputs to TF32 (10-bit mantissa, float32
  range and accumulation) on GPUs of compute capability 8.0 and newer. A CuPy setting
  (CUPY_TF32=1, read at the process's first float32 matmul), so CuPy only. It reaches every
  float32 product CuPy runs, including the column sums minivit computes as ones @ a (the bias,
  LayerNorm and E_pos gradients, minivit.parallel.col_sums), where PyTorch's TF32 keeps its
  sums in float32: their inputs are rounded to TF32 too.
- "fp16": mixed precision (Micikevicius et al. 2018). The parameters, optimizer state and the
  update stay float32 ("master weights"); each step runs forward and backward in float16 on a
  float16 copy, with dynamic loss scaling so small gradients do not flush to zero:

      p16 = fp16(p);  logits = f(p16, fp16(x));  L = CE(fp32(logits))          (loss in float32)
      g16 = backward(S * dL/dlogits);   g = fp32(g16) / S                      (dL/dp, float32)
      all g finite:  update p with g; after `growth_interval` such steps in a row, S <- 2 S
      otherwise:     skip the update (p, optimizer state and its step count unchanged), S <- S / 2
                     (the lr schedule and the step's random draws move on, as in PyTorch)

  S lives in a small dict (the run's checkpoint stores it), so a resumed run scales exactly
  as one that never stopped. On NumPy float16 matmuls have no BLAS and run ~56x slower than
  float32: the option is there to be checked on the CPU and used on a GPU.
"""
import os

from .backend import get_array_module
from .flat import FlatDict, joined

PRECISIONS = ("fp32", "tf32", "fp16")
MIN_SCALE = 2.0 ** -24          # float16's smallest subnormal: below it nothing is left to scale


def check_precision(precision: str, dtype: str, backend_name: str | None = None):
    """Raise ValueError for a precision this run cannot use."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and dtype != "float32":
        raise ValueError(f"--precision {precision} keeps float32 master weights: it needs "
                         f"--dtype float32, got {dtype}")
    if precision == "tf32" and backend_name not in (None, "cupy"):
        raise ValueError("--precision tf32 is a cuBLAS matmul mode: it needs --backend cupy")


def prepare(precision: str, dtype: str, arch: str, backend_name: str):
    """Check a run's precision against its model and backend; switch TF32 on if asked."""
    check_precision(precision, dtype, backend_name)
    if precision == "fp16" and arch != "vit":
        raise ValueError(f"--precision fp16 supports the plain ViT; {arch} keeps BatchNorm "
                         f"statistics, which this mixed-precision step does not handle")
    if precision == "tf32":
        enable_tf32()


def enable_tf32():
    """Let CuPy's float32 matmuls use TF32 tensor cores (CUPY_TF32=1). CuPy reads the variable
    at the first float32 matmul of the process, so call this before any."""
    os.environ["CUPY_TF32"] = "1"


def new_loss_scale(precision: str, init_scale=2.0 ** 16, growth_interval=2000) -> dict | None:
    """The dynamic loss scale's state for fp16 ({"scale", "good_steps", "skipped",
    "growth_interval"}); None for the other precisions (no scaling)."""
    if precision != "fp16":
        return None
    return {"scale": float(init_scale), "good_steps": 0, "skipped": 0,
            "growth_interval": int(growth_interval)}


def half_copy(arrays: dict) -> dict:
    """name -> float16 copy (the compute copy of the float32 master weights), as views of one
    float16 array."""
    return FlatDict(joined(arrays, "float16"), arrays)


def unscale(grads16: dict, scale: float) -> dict:
    """float16 gradients of S*L -> float32 gradients of L: fp32(g16) / S, as views of one
    float32 array."""
    flat = joined(grads16, "float32")
    flat *= 1.0 / scale
    return FlatDict(flat, grads16)


def all_finite(grads: dict):
    """A 0-d backend bool: every gradient element finite (no host read)."""
    flat = getattr(grads, "flat", None)
    if flat is not None:
        return get_array_module(flat).isfinite(flat).all()
    gs = list(grads.values())
    xp = get_array_module(*gs[:1])
    return xp.stack([xp.isfinite(g).all() for g in gs]).all()


def update_scale(ls: dict, finite: bool) -> bool:
    """Advance the loss scale after a step whose unscaled gradients were (not) all finite.
    Returns whether the update should be applied."""
    if finite:
        ls["good_steps"] += 1
        if ls["good_steps"] >= ls["growth_interval"]:
            ls["scale"], ls["good_steps"] = ls["scale"] * 2.0, 0
        return True
    ls["scale"], ls["good_steps"], ls["skipped"] = ls["scale"] / 2.0, 0, ls["skipped"] + 1
    if ls["scale"] < MIN_SCALE:
        raise FloatingPointError(f"the float16 gradients are not finite even at loss scale "
                                 f"{ls['scale'] * 2:g}: the model diverged")
    return False
