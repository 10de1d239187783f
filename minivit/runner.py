"""A training run: a folder with config.json, log.jsonl, last.npz, best.npz, summary.json and
curves.png; resumable from last.npz at any step, interruptible with Ctrl-C."""
import json
import math
import os
import time

from tqdm.auto import tqdm

from . import backend
from .backend import to_device
from .blas import owned_threads
from .budget import MEASURE_EPOCHS, decide, epoch_wall
from .checkpoint import check_params, check_same, load_checkpoint, load_state, save_checkpoint
from .curves import plot_curves
from .data.loader import batch_slices, permutation, train_batch
from .models import model_name, model_shapes
from .optim import adamw_init, cosine_lr, pack_adamw, sgd_init
from .precision import new_loss_scale
from .precision import prepare as prepare_precision
from .progressive import check_schedule, shrink_images, size_at
from .recipes import TrainConfig
from .train import (
    NonFiniteLoss,
    StopFlag,
    build_model,
    build_state,
    derived_rng,
    evaluate,
    split_data,
    train_step,
)
from .workspace import Workspace


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM: a checkpoint was saved; the message says how to resume. .signum: the
    signal (a shell's exit status for it is 128 + signum)."""

    def __init__(self, message, signum=2):
        super().__init__(message)
        self.signum = int(signum)


def _write_json(path, obj, lines=False):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        if lines:
            f.writelines(json.dumps(r) + "\n" for r in obj)
        else:
            json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _plain(d):
    return json.loads(json.dumps(d))


class Run:
    def __init__(self, cfg, tc: TrainConfig, run_dir, arrays, log=print, bar=True):
        self.cfg, self.tc, self.dir, self.log, self.bar = cfg, tc, run_dir, log, bar
        check_schedule(tc.res_schedule, cfg, model_name(cfg))
        prepare_precision(tc.precision, tc.dtype, model_name(cfg), backend.name())
        data = split_data(arrays, tc)
        self.n = {k: len(v[1]) for k, v in data.items()}
        self.dev = {k: (to_device(x), to_device(y)) for k, (x, y) in data.items()}
        self.steps = batch_slices(self.n["train"], tc.batch_size)
        self.workspace = Workspace()           # activation buffers reused by every step
        if not self.steps:
            raise ValueError(f"{self.n['train']} training images: fewer than one batch of "
                             f"{tc.batch_size}")
        self.warmup_steps = round(tc.warmup_epochs * len(self.steps))
        self.path = {k: os.path.join(run_dir, k) for k in
                     ("config.json", "log.jsonl", "last.npz", "best.npz", "summary.json",
                      "curves.png")}

    # -- state -----------------------------------------------------------------------------
    def start(self):
        if os.path.exists(self.path["last.npz"]):
            raise FileExistsError(f"{self.dir} already holds a run: continue it with --resume "
                                  f"{self.dir}, or pick another --out")
        os.makedirs(self.dir, exist_ok=True)
        _write_json(self.path["config.json"], {"arch": model_name(self.cfg),
                                               "model": self.cfg.to_dict(),
                                               "train": self.tc.to_dict(),
                                               "backend": backend.name()})
        self.params = build_model(self.cfg, self.tc.seed, self.tc.dtype)
        self.state = build_state(self.cfg, self.tc.dtype)          # BN running statistics
        init = adamw_init if self.tc.optimizer == "adamw" else sgd_init
        self.opt = init(self.params)
        self.pack()
        self.meta = {"arch": model_name(self.cfg), "model": self.cfg.to_dict(),
                     "train": self.tc.to_dict(), "epoch": 0, "step": 0, "partial": None,
                     "history": [], "best_val_acc": None, "best_epoch": None,
                     "loss_scale": new_loss_scale(self.tc.precision),
                     "rng": {"seed": self.tc.seed, "scheme": "SeedSequence([seed, epoch, step])"}}
        self.save("last.npz")
        return self

    def resume(self):
        params, opt, meta = load_checkpoint(self.path["last.npz"], _plain(self.cfg.to_dict()))
        check_params(params, model_shapes(self.cfg), self.path["last.npz"])
        saved_train = _plain(TrainConfig(**meta["train"]).to_dict())   # new fields: defaults
        check_same(saved_train, _plain(self.tc.to_dict()), f"checkpoint {self.path['last.npz']}")
        dtype = self.tc.dtype
        self.params = {k: to_device(v, dtype) for k, v in params.items()}
        self.state = {k: to_device(v, dtype) for k, v in load_state(self.path["last.npz"]).items()}
        self.opt = {k: ({n: to_device(a, dtype) for n, a in v.items()} if isinstance(v, dict)
                        else int(v)) for k, v in opt.items()}
        self.meta = meta
        self.pack()
        return self

    def pack(self):
        """AdamW over one buffer per tensor kind on CuPy (minivit.optim.pack_adamw)."""
        if self.tc.optimizer == "adamw":
            pack_adamw(self.params, self.opt)

    def save(self, name):
        self.meta["backend"] = backend.name()
        save_checkpoint(self.path[name], self.params, self.opt, self.meta, self.state)

    # -- loop ------------------------------------------------------------------------------
    @property
    def epochs(self):
        """The run's length: --epochs, or what --time-budget fitted (minivit/budget.py)."""
        fitted = self.meta.get("time_budget")
        return fitted["epochs"] if fitted else self.tc.epochs

    def fit_budget(self):
        """With --time-budget, fit the run's length once MEASURE_EPOCHS epochs have run, then
        check its pace at the budget's CHECKS; each decision is logged and saved at once."""
        m, tc = self.meta, self.tc
        if not tc.time_budget or tc.epochs <= MEASURE_EPOCHS or m["step"]:
            return
        fit, line = decide(m.get("time_budget"), m["history"], tc.time_budget, tc.epochs,
                           tc.warmup_epochs)
        if line:
            m["time_budget"] = fit
            self.log(line)
            self.save("last.npz")            # the decision, and the last epoch's wall_seconds

    def train(self, stop_after_steps=None):
        """Train to the last epoch and return the summary; stop_after_steps acts like a Ctrl-C
        after that many steps of this session (for tests). The whole loop runs inside
        owned_threads(): a BLAS call between steps (the resizing of progressive runs) would
        otherwise leave OpenBLAS's workers spinning into the next step."""
        self.stop_after, self.session_steps = stop_after_steps, 0
        with StopFlag() as flag, owned_threads():
            self.fit_budget()
            if self.meta["epoch"] >= self.epochs:
                self.log(f"{self.dir} has trained all its {self.epochs} epochs: nothing to "
                         f"train, only the final evaluation again (a longer run is a new one)")
            while self.meta["epoch"] < self.epochs:
                self.epoch(flag)
                self.fit_budget()
                if flag.stop:
                    self.interrupted(flag.signum)
        return self.finish()

    def interrupted(self, signum=2):
        m = self.meta
        if not m["step"]:            # at an epoch's end: its wall_seconds, set after its save
            self.save("last.npz")
        where = f"epoch {m['epoch'] + 1}, step {m['step']}" if m["step"] else \
            f"the end of epoch {m['epoch']}"
        raise TrainingInterrupted(f"interrupted: saved {self.path['last.npz']} at {where}; "
                                  f"resume with: python train_cifar.py --resume {self.dir}",
                                  signum)

    def epoch(self, flag):
        tc, m = self.tc, self.meta
        e = m["epoch"]
        x, y = self.dev["train"]
        perm = permutation(self.n["train"], derived_rng(tc.seed, e, 0))
        acc = m["partial"] or {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        t0 = time.perf_counter() - acc["seconds"]
        bar = tqdm(total=len(self.steps), initial=m["step"], desc=f"epoch {e + 1}/{self.epochs}",
                   disable=not self.bar, leave=True, dynamic_ncols=True)
        lr, size = 0.0, size_at(tc.res_schedule, e)
        for s in range(m["step"], len(self.steps)):
            if flag.stop:
                m["step"], m["partial"] = s, {**acc, "seconds": time.perf_counter() - t0}
                self.save("last.npz")
                bar.close()
                return
            lr = cosine_lr(e * len(self.steps) + s, self.epochs * len(self.steps), tc.lr,
                           self.warmup_steps, tc.min_lr)
            idx = perm[self.steps[s][0]:self.steps[s][1]]
            rng = derived_rng(tc.seed, e, s + 1)
            xb, tb = train_batch(x[idx], y[idx], rng, tc.augment, self.cfg.num_classes, tc.dtype)
            if size is not None and size != xb.shape[-1]:
                xb = shrink_images(xb, size)
            try:
                loss, correct = train_step(self.params, self.opt, xb, tb, self.cfg, tc, lr, rng,
                                           self.state, self.workspace, size,
                                           m.get("loss_scale"))
            except NonFiniteLoss as err:
                bar.close()
                raise NonFiniteLoss(
                    f"training stopped: {err} at epoch {e + 1}, step {s + 1}. The last good "
                    f"checkpoint is {self.path['last.npz']} (not overwritten); try a lower --lr "
                    f"or a longer --warmup, or --resume {self.dir} to retry") from None
            acc["loss_sum"] += loss
            acc["correct"] += correct
            acc["seen"] += len(idx)
            self.session_steps += 1
            if self.stop_after and self.session_steps >= self.stop_after:
                flag.stop = True
            dt = time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{acc['loss_sum'] / (s + 1):.4f}",
                            acc=f"{acc['correct'] / acc['seen']:.3f}",
                            img_s=f"{acc['seen'] / dt:.0f}", lr=f"{lr:.2e}", refresh=False)
        bar.close()
        self.end_epoch(e, acc, time.perf_counter() - t0, lr, t0)

    def val_size(self, e):
        """The size epoch e validates at: None (full size) at full size and in the last epoch,
        else the epoch's smaller training size (4x cheaper at 16 px: ~3 min of the cpu-hour). Only
        full-size validations choose best.npz: the model is used, and tested, at full size."""
        size = size_at(self.tc.res_schedule, e)
        return None if size is None or e + 1 == self.epochs or size == self.cfg.hw[0] \
            else size

    def end_epoch(self, e, acc, seconds, lr, t0):
        """Validate, log and save epoch e; t0 is when its training started (perf_counter)."""
        m = self.meta
        val_size = self.val_size(e)
        val_loss, val_acc = evaluate(self.params, self.cfg, *self.dev["val"], self.tc,
                                     self.state, self.workspace, val_size)
        rec = {"epoch": e + 1, "train_loss": acc["loss_sum"] / len(self.steps),
               "train_acc": acc["correct"] / acc["seen"], "val_loss": val_loss,
               "val_acc": val_acc, "lr": lr, "img_per_s": acc["seen"] / max(seconds, 1e-9),
               "epoch_seconds": seconds, "val_seconds": time.perf_counter() - t0 - seconds}
        if self.tc.res_schedule:
            rec["image_size"] = size_at(self.tc.res_schedule, e)
            rec["val_image_size"] = val_size or self.cfg.hw[0]  # schedules: plain ViT only
        if m.get("loss_scale"):                    # fp16: the scale now, steps skipped so far
            rec["loss_scale"] = m["loss_scale"]["scale"]
            rec["skipped_steps"] = m["loss_scale"]["skipped"]
        m["history"].append(rec)
        m["epoch"], m["step"], m["partial"] = e + 1, 0, None
        best = m["best_val_acc"]
        improved = val_size is None and math.isfinite(val_acc) and (best is None or
                                                                     val_acc > best)
        if improved:
            m["best_val_acc"], m["best_epoch"] = val_acc, e + 1
        if improved:            # best first: a stop between the two saves redoes the epoch
            self.save("best.npz")
        self.save("last.npz")
        rec["wall_seconds"] = time.perf_counter() - t0     # in the next save; now in log.jsonl
        _write_json(self.path["log.jsonl"], m["history"], lines=True)
        self.log(f"epoch {e + 1}/{self.epochs}: train loss {rec['train_loss']:.4f} "
                 f"acc {rec['train_acc']:.4f} | val loss {val_loss:.4f} acc {val_acc:.4f}"
                 f"{f' (at {val_size} px)' if val_size else ''} | "
                 f"{rec['img_per_s']:.0f} img/s, {seconds:.0f} s of training, "
                 f"{rec['wall_seconds']:.0f} s in all")

    def finish(self):
        m = self.meta
        test = self.dev["test"]
        final = evaluate(self.params, self.cfg, *test, self.tc, self.state, self.workspace)
        summary = {"epochs": m["epoch"], "final_val_acc": m["history"][-1]["val_acc"]
                   if m["history"] else None, "final_test_loss": final[0],
                   "final_test_acc": final[1], "best_epoch": m["best_epoch"],
                   "best_val_acc": m["best_val_acc"],
                   "train_seconds": sum(r["epoch_seconds"] for r in m["history"]),
                   "epochs_wall_seconds": sum(epoch_wall(r) for r in m["history"]),
                   "n_train": self.n["train"], "n_val": self.n["val"], "n_test": self.n["test"]}
        if m.get("time_budget"):
            summary["time_budget"] = m["time_budget"]
        if m["best_epoch"] is not None and m["best_epoch"] == m["epoch"]:
            summary["best_test_loss"], summary["best_test_acc"] = final  # the same parameters
        elif m["best_epoch"] is not None:
            best, _, _ = load_checkpoint(self.path["best.npz"], _plain(self.cfg.to_dict()))
            best = {k: to_device(v, self.tc.dtype) for k, v in best.items()}
            best_state = {k: to_device(v, self.tc.dtype)
                          for k, v in load_state(self.path["best.npz"]).items()}
            summary["best_test_loss"], summary["best_test_acc"] = evaluate(
                best, self.cfg, *test, self.tc, best_state, self.workspace)
        _write_json(self.path["summary.json"], summary)
        if plot_curves(m["history"], self.path["curves.png"]):
            summary["curves"] = self.path["curves.png"]
        return summary
