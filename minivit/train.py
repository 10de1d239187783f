"""The pieces of training: the model's construction, one step, evaluation, the data split and
the random generators (the resumable run that uses them is minivit/runner.py).

Reproducibility: every random draw of epoch e comes from generators derived from (seed, e, s):
the shuffle from (seed, e, 0) and step s's augmentation/dropout from (seed, e, s + 1). So the
whole RNG state is (seed, epoch, step), which the checkpoint stores, and a run stopped at any
step and resumed draws exactly what an uninterrupted one would have.
"""
import math
import signal
from contextlib import nullcontext

import numpy as np

from . import backend, data_parallel
from .backend import get_array_module, to_numpy
from .blas import owns_threads
from .data.cifar import class_subset
from .data.loader import batch_slices, eval_batch
from .layers.loss import cross_entropy
from .models import batchnorm_params, get_model, model_name, predict_probs
from .optim import adamw_step, clip_grad_norm, sgd_step
from .precision import all_finite, half_copy, unscale, update_scale
from .progressive import at_resolution, shrink_images
from .recipes import TrainConfig


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or inf."""


def build_model(cfg, seed: int, dtype: str) -> dict:
    """Fresh parameters for cfg, any registered model (the one place a model is constructed)."""
    return get_model(model_name(cfg)).init(cfg, seed, dtype)


def build_state(cfg, dtype: str) -> dict:
    """Fresh BatchNorm running statistics for cfg ({} for the plain ViT)."""
    return get_model(model_name(cfg)).init_state(cfg, dtype)


def derived_rng(seed, epoch, step):
    """A backend generator for (seed, epoch, step) (see the module docstring)."""
    entropy = np.random.SeedSequence([seed, epoch, step]).generate_state(1)[0]
    return backend.default_rng(int(entropy))


def split_data(arrays, tc: TrainConfig):
    """Host arrays -> {"train", "val", "test": (x, y)}: tc.classes (if set) are kept first; the
    last val_split training images are held out for validation; limit_train / limit_test keep
    the first N of the rest."""
    x_tr, y_tr, x_te, y_te = arrays
    if tc.classes:
        (x_tr, y_tr), (x_te, y_te) = (class_subset(x, y, tc.classes)
                                      for x, y in ((x_tr, y_tr), (x_te, y_te)))
    n_val = tc.val_split
    if n_val >= len(x_tr):
        raise ValueError(f"val_split {n_val} leaves no training images out of {len(x_tr)}")
    keep = len(x_tr) - n_val
    if tc.limit_train:
        keep = min(keep, tc.limit_train)
    te = slice(0, tc.limit_test) if tc.limit_test else slice(None)
    return {"train": (x_tr[:keep], y_tr[:keep]),
            "val": (x_tr[len(x_tr) - n_val:], y_tr[len(x_tr) - n_val:]),
            "test": (x_te[te], y_te[te])}


@owns_threads
def evaluate(params, cfg, x_u8, y, tc: TrainConfig, state=None, workspace=None, size=None):
    """(mean cross-entropy, accuracy) of the model on backend uint8 images; one host read.
    BatchNorm models use the running statistics in `state` (eval mode). `workspace`: buffers
    reused by every batch (e.g. the training run's: only their contents change). `size`: run
    on the images shrunk to size x size, as a progressive run trains (minivit/progressive.py)."""
    if len(y) == 0:
        return float("nan"), float("nan")
    xp = get_array_module(x_u8)
    if size is not None:
        params, cfg, _ = at_resolution(params, cfg, size)
    loss_sum = xp.zeros((), "float64")
    correct = xp.zeros((), "int64")
    for s, e in batch_slices(len(y), tc.eval_batch_size, drop_last=False):
        xb = eval_batch(x_u8[s:e], tc.dtype)
        if size is not None and size != xb.shape[-1]:
            xb = shrink_images(xb, size)
        probs = predict_probs(params, xb, cfg, state, tc.eval_batch_size, workspace)
        yb = y[s:e]
        loss_sum += -xp.log(xp.maximum(probs[xp.arange(e - s), yb], 1e-30)).sum()
        correct += (probs.argmax(axis=1) == yb).sum()
    loss, acc = to_numpy(xp.stack([loss_sum, correct.astype("float64")])) / len(y)
    return float(loss), float(acc)


@owns_threads
def train_step(params, opt, x, targets, cfg, tc: TrainConfig, lr, rng, state=None,
               workspace=None, size=None, loss_scale=None):
    """Forward, loss, backward, clip, update. Returns host (loss, correct): the one host read,
    taken before the update, so a NaN loss leaves the parameters untouched. BatchNorm models
    update their running statistics in `state` in place. `workspace` (a Workspace reused from
    step to step) keeps the ViT's activation buffers; the image gradient is not computed.
    `size`: x holds size x size images, smaller than cfg's (minivit/progressive.py).
    `loss_scale`: tc.precision == "fp16" runs forward/backward in float16 with this dynamic
    loss scale (minivit/precision.py), updated in place; a step whose gradients overflow is
    skipped."""
    xp = get_array_module(x)
    spec = get_model(model_name(cfg))
    run_params, run_cfg, pull_back = (params, cfg, None) if size is None else \
        at_resolution(params, cfg, size)
    half = loss_scale is not None
    if half != (tc.precision == "fp16"):
        raise ValueError("precision fp16 and a loss_scale (minivit.precision.new_loss_scale) "
                         "go together")
    with np.errstate(over="ignore", invalid="ignore") if half else nullcontext():
        logits, loss, grads = _forward_backward(spec, run_params, x, targets, run_cfg, tc, rng,
                                                state, workspace, loss_scale)
    if pull_back:
        grads = pull_back(grads)
    labels = targets if targets.ndim == 1 else targets.argmax(axis=1)
    correct = (logits.argmax(axis=1) == labels).sum()
    read = [xp.asarray(loss, "float64"), correct.astype("float64")]
    if half:
        read.append(all_finite(grads).astype("float64"))
    host = to_numpy(xp.stack(read))
    loss_h, correct_h = float(host[0]), int(host[1])
    if not math.isfinite(loss_h):
        raise NonFiniteLoss(f"loss is {loss_h}" + (" (float16 activations overflowed)"
                                                   if half else ""))
    if half and not update_scale(loss_scale, bool(host[2])):
        return loss_h, correct_h                     # overflow: skip the update, S halved
    no_decay = batchnorm_params(state)
    if tc.optimizer == "adamw":                    # clipping folded into the update
        adamw_step(params, grads, opt, lr, weight_decay=tc.weight_decay, no_decay=no_decay,
                   clip_norm=tc.clip_norm or None)
    else:
        if tc.clip_norm:
            clip_grad_norm(grads, tc.clip_norm)
        sgd_step(params, grads, opt, lr, momentum=0.9, nesterov=True, weight_decay=tc.weight_decay,
                 no_decay=no_decay)
    return loss_h, correct_h


def _forward_backward(spec, params, x, targets, cfg, tc, rng, state, workspace, loss_scale):
    """(logits, loss, grads) of train_step, in float16 with loss scale S when loss_scale is given
    (overflow there is expected and handled by the caller, hence no warnings). In float32 on
    NumPy with the cores owned, a model without BatchNorm runs one share of the batch per
    thread (minivit/data_parallel.py); fp16 stays whole."""
    if loss_scale is None and data_parallel.num_shares(x, state) > 1:
        return data_parallel.forward_backward(spec, params, x, targets, cfg, tc.label_smoothing,
                                              rng, workspace)
    if loss_scale is not None:
        params, x = half_copy(params), x.astype("float16")
    logits, cache = spec.forward(params, x, cfg, True, rng, state, workspace=workspace)
    if loss_scale is not None:
        logits = logits.astype("float32")
    loss, dlogits = cross_entropy(logits, targets, tc.label_smoothing)
    if loss_scale is not None:
        dlogits = (dlogits * loss_scale["scale"]).astype("float16")
    _, grads = spec.backward(dlogits, cache, input_grad=False)
    if loss_scale is not None:
        grads = unscale(grads, loss_scale["scale"])
    return logits, loss, grads


class StopFlag:
    """SIGINT (Ctrl-C) or SIGTERM (kill, timeout, a batch scheduler) sets .stop, checked between
    steps; a second signal interrupts at once."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.stop = False
        self.signum = signal.SIGINT          # the signal that stopped the run (exit 128 + it)
        self._old = {}

    def __enter__(self):
        try:
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:                      # not the main thread: no handler
            self._old = {}
        return self

    def _handle(self, signum, frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop, self.signum = True, signum

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
