"""Fine-tuning a trained ViT on a new task (the paper's Sec. 3.2 and Appendix B.1.1).

- The head is removed and replaced by a zero-initialised D x K layer for the K new classes.
- At a higher resolution the patch size stays, so the sequence grows: E_pos is interpolated to
  the new patch grid (transfer.resize) and the images are resized to the new size (bicubic).
- SGD with momentum 0.9, no weight decay, gradients clipped at global norm 1, a linear warmup
  then cosine decay of the learning rate: the paper's fine-tuning recipe (Table 4: batch 512,
  lr from {0.001, 0.003, 0.01, 0.03}); the optimiser is minivit.optim.

    python -m minivit.transfer.finetune CHECKPOINT --classes 5,6,7,8,9 --image-size 48 --steps 200
"""
import argparse
import sys
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .. import backend
from ..backend import get_array_module, to_numpy
from ..data.cifar import class_subset
from ..data.loader import AugmentConfig, eval_batch, permutation, train_batch
from ..layers.loss import cross_entropy
from ..model import predict, vit_backward, vit_forward
from ..optim import clip_grad_norm, cosine_lr, sgd_init, sgd_step
from .resize import resize_images, resize_params


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 500
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    clip: float = 1.0                 # global gradient-norm clip
    warmup_steps: int = 20
    seed: int = 0
    dtype: str = "float32"
    aug: AugmentConfig = field(default_factory=lambda: AugmentConfig(crop=4, flip=True))


def replace_head(params, cfg, num_classes):
    """A zero-initialised D x K head for num_classes classes: (params, cfg)."""
    xp = get_array_module(params["head.weight"])
    dtype = params["head.weight"].dtype
    new = {**params, "head.weight": xp.zeros((cfg.dim, num_classes), dtype=dtype),
           "head.bias": xp.zeros(num_classes, dtype=dtype)}
    return new, cfg.replace(num_classes=num_classes)


def prepare(params, cfg, num_classes=None, image_size=None, resize_mode="bilinear"):
    """A trained model made ready for a new task: a new head and/or another resolution."""
    if image_size is not None and image_size != cfg.image_size:
        cfg_new = cfg.replace(image_size=image_size)
        params, cfg = resize_params(params, cfg, cfg_new, resize_mode), cfg_new
    if num_classes is not None:
        params, cfg = replace_head(params, cfg, num_classes)
    return params, cfg


def _fit(x, cfg):
    """Resize a float batch to the model's image size when it differs."""
    return x if tuple(x.shape[2:]) == cfg.hw else resize_images(x, cfg.hw)


def accuracy(params, cfg, x_u8, y, dtype="float32", batch_size=256):
    """Top-1 accuracy on backend uint8 images (resized to cfg's size if needed)."""
    correct = 0
    for s in range(0, len(y), batch_size):
        x = _fit(eval_batch(x_u8[s:s + batch_size], dtype), cfg)
        correct += int((to_numpy(predict(params, x, cfg, batch_size)).argmax(1)
                        == to_numpy(y[s:s + batch_size])).sum())
    return correct / max(len(y), 1)


def finetune(params, cfg, x_u8, y, fc: FinetuneConfig, progress=True):
    """Fine-tune params (updated in place) on backend uint8 images x_u8 and int labels y.

    Returns the log [(step, loss, lr)]; raises FloatingPointError on a non-finite loss."""
    opt = sgd_init(params)
    rng = backend.default_rng(fc.seed)
    n, B = len(y), min(fc.batch_size, len(y))
    order, pos, log = permutation(n, rng), 0, []
    bar = tqdm(range(fc.steps), desc="fine-tune", disable=not progress, file=sys.stderr)
    for step in bar:
        if pos + B > n:
            order, pos = permutation(n, rng), 0
        idx = order[pos:pos + B]
        pos += B
        x, t = train_batch(x_u8[idx], y[idx], rng, fc.aug, cfg.num_classes, fc.dtype)
        logits, cache = vit_forward(params, _fit(x, cfg), cfg, train=True, rng=rng)
        loss, dlogits = cross_entropy(logits, t)
        _, grads = vit_backward(dlogits, cache, input_grad=False)
        clip_grad_norm(grads, fc.clip)
        lr = cosine_lr(step, fc.steps, fc.lr, fc.warmup_steps)
        loss = float(loss)
        if not np.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss} at fine-tuning step {step}")
        sgd_step(params, grads, opt, lr, momentum=fc.momentum)
        log.append((step, loss, lr))
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2g}")
    return log


def main(argv=None):
    from .linear_probe import fewshot_eval, load_task, report
    ap = argparse.ArgumentParser(prog="python -m minivit.transfer.finetune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("checkpoint", help="a train_cifar.py checkpoint of a ViT (.npz, or a run folder: its "
      "best.npz, else last.npz)")
    a("--classes", default="0,1,2,3,4,5,6,7,8,9", help="CIFAR-10 classes of the new task")
    a("--image-size", type=int, help="fine-tune at this resolution (E_pos interpolated)")
    a("--resize-mode", choices=["bilinear", "bicubic"], default="bilinear")
    a("--steps", type=int, default=500)
    a("--batch-size", type=int, default=128)
    a("--lr", type=float, default=0.01)
    a("--limit-train", type=int, help="use only the first N training images of the classes")
    a("--limit-test", type=int, help="evaluate on the first N test images of the classes")
    a("--fewshot", action="store_true", help="also report 1/5/10/25-shot linear probes of the "
      "frozen model on these classes")
    a("--data-dir", help="folder with cifar-10-python.tar.gz (default: $MINIVIT_DATA or "
      "~/.cache/minivit)")
    a("--out", help="write the results (JSON) here")
    args = ap.parse_args(argv)
    host, cfg, _, classes, (x_tr, y_tr, x_te, y_te) = load_task(
        args.checkpoint, args.classes, args.data_dir)
    x_tr, y_tr = (a[:args.limit_train] for a in class_subset(x_tr, y_tr, classes))
    x_te, y_te = (a[:args.limit_test] for a in class_subset(x_te, y_te, classes))
    fc = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    params = {k: backend.to_device(v, fc.dtype) for k, v in host.items()}
    result = {"checkpoint": args.checkpoint, "classes": classes, "train_images": len(y_tr),
              "test_images": len(y_te), "steps": fc.steps, "batch_size": fc.batch_size,
              "lr": fc.lr}
    if args.fewshot:
        probe = fewshot_eval(params, cfg, x_tr, y_tr, x_te, y_te, dtype=fc.dtype)
        result.update(fewshot=probe["shots"], fewshot_std=probe["std"])
        print("few-shot linear probe (frozen, mean of 5 draws):", result["fewshot"])
    params, cfg = prepare(params, cfg, len(classes), args.image_size, args.resize_mode)
    xd_tr, yd_tr, xd_te, yd_te = (backend.to_device(a) for a in (x_tr, y_tr, x_te, y_te))
    log = finetune(params, cfg, xd_tr, yd_tr, fc)
    result.update(image_size=cfg.image_size, final_loss=log[-1][1],
                  test_accuracy=accuracy(params, cfg, xd_te, yd_te, fc.dtype))
    report(result, args.out)


if __name__ == "__main__":
    main()
