"""Few-shot linear evaluation (the paper's Sec. 4.1 and big_vision's few-shot evaluator).

The network is frozen; its pre-logits y = LN(z_L^0) (the final-LN class token, eq. 4; the
token mean for pool="gap") are the features. For each class, `shots` training images are
drawn; a linear map is fitted in closed form by regularised least squares to {-1, 1}^K targets:
    x <- (x - mean) / (std + 1e-5)   (per feature, over the few-shot set: "whitening")
    X = [x, 100]                      (a large constant bias feature, so barely regularised)
    Y = 2 onehot(labels) - 1
    W = (X^T X + lambda I)^{-1} X^T Y = X^T (X X^T + lambda I)^{-1} Y,   lambda = 2^10
(the second form when there are fewer points than features), and a test image gets the class
argmax_k (x W)_k. Accuracy on the held-out images is reported per shot count, as the mean
(and spread) over several random draws of the shots.

    python -m minivit.transfer.linear_probe CHECKPOINT [--classes 5,6,7,8,9] [--seeds 5]
"""
import argparse
import json

import numpy as np

from .. import backend
from ..backend import get_array_module, to_numpy
from ..data.loader import eval_batch
from ..model import vit_forward

BIAS_CONSTANT = 100.0
L2_REG = 2.0 ** 10


def prelogits(params, images, cfg, batch_size=256):
    """Frozen features (B, D): the model's head replaced by the identity, in batches."""
    xp = get_array_module(params["head.weight"])
    D = cfg.dim
    p = {**params, "head.weight": xp.eye(D, dtype=params["head.weight"].dtype),
         "head.bias": xp.zeros(D, dtype=params["head.bias"].dtype)}
    feat_cfg = cfg.replace(num_classes=D, dropout=0.0, attn_dropout=0.0, drop_path=0.0)
    out = [to_numpy(vit_forward(p, images[s:s + batch_size], feat_cfg)[0])
           for s in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, D))


def _design(x, mean, std):
    x = (np.asarray(x, dtype=np.float64) - mean) / std
    return np.concatenate([x, np.full((len(x), 1), BIAS_CONSTANT)], axis=1)


def fit_least_squares(x, labels, num_classes, l2_reg=L2_REG):
    """Features (n, D), int labels (n,) -> model dict (W (D+1, K), mean, std)."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    if x.ndim != 2 or labels.shape != (len(x),):
        raise ValueError(f"features must be (n, D) with labels (n,), got {x.shape}, "
                         f"{labels.shape}")
    mean = x.mean(axis=0, keepdims=True)
    std = x.std(axis=0, keepdims=True) + 1e-5
    X = _design(x, mean, std)                                        # (n, D+1)
    Y = 2.0 * np.eye(num_classes)[labels] - 1.0                      # (n, K)
    n, d = X.shape
    if n >= d:
        W = np.linalg.solve(X.T @ X + l2_reg * np.eye(d), X.T @ Y)
    else:
        W = X.T @ np.linalg.solve(X @ X.T + l2_reg * np.eye(n), Y)
    return {"W": W, "mean": mean, "std": std}


def predict_least_squares(model, x):
    """Class predictions (n,) of a fitted model for features (n, D)."""
    return (_design(x, model["mean"], model["std"]) @ model["W"]).argmax(axis=1)


def fewshot_accuracy(train_x, train_y, test_x, test_y, shots=(1, 5, 10, 25), l2_reg=L2_REG,
                     seed=0):
    """{shots: test accuracy} with `shots` random training examples per class."""
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    classes = np.unique(train_y)
    K = int(max(classes.max(), test_y.max())) + 1
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(train_y == c)) for c in classes}
    results = {}
    for n in shots:
        if any(len(order[c]) < n for c in classes):
            raise ValueError(f"{n}-shot needs {n} training examples of every class")
        idx = np.concatenate([order[c][:n] for c in classes])
        model = fit_least_squares(np.asarray(train_x)[idx], train_y[idx], K, l2_reg)
        results[n] = float((predict_least_squares(model, test_x) == test_y).mean())
    return results


def fewshot_eval(params, cfg, x_tr, y_tr, x_te, y_te, shots=(1, 5, 10, 25), seeds=5,
                 dtype="float32"):
    """{"shots": {n: mean accuracy}, "std": {n: spread}} over `seeds` draws, on host uint8
    images: features are computed once, for the test images and a pool of max(shots) * seeds
    training images per class (shot counts larger than the rarest class are left out)."""
    y_tr = np.asarray(y_tr)
    fewest = int(np.bincount(y_tr)[np.unique(y_tr)].min())
    shots = [n for n in shots if n <= fewest]
    rng = np.random.default_rng(0)
    pool = np.concatenate([rng.permutation(np.flatnonzero(y_tr == c))[:max(shots) * seeds]
                           for c in np.unique(y_tr)])
    feats = [prelogits(params, eval_batch(backend.to_device(x), dtype), cfg)
             for x in (np.asarray(x_tr)[pool], x_te)]
    runs = [fewshot_accuracy(feats[0], y_tr[pool], feats[1], np.asarray(y_te), shots, seed=s)
            for s in range(seeds)]
    return {"shots": {n: float(np.mean([r[n] for r in runs])) for n in shots},
            "std": {n: float(np.std([r[n] for r in runs])) for n in shots}, "seeds": seeds}


def load_task(checkpoint, classes, data_dir):
    """What the transfer commands start from: (host params, cfg, meta, class list, CIFAR-10
    arrays); a bad checkpoint, class list or data folder exits with a one-line error."""
    from ..checkpoint import load_vit_checkpoint
    from ..data.cifar import load_cifar10
    try:
        host, cfg, meta = load_vit_checkpoint(checkpoint)
        return host, cfg, meta, [int(c) for c in classes.split(",")], load_cifar10(data_dir)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from e


def rounded(obj, digits=4):
    """obj with every float rounded (0.23742000000000002 -> 0.2374), for printing."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v, digits) for v in obj]
    return obj


def report(result, out=None):
    """Print a transfer command's result as JSON (floats to 4 digits), and write it in full to
    `out` if given."""
    print(json.dumps(rounded(result)))
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=1)


def main(argv=None):
    from ..data.cifar import class_subset
    ap = argparse.ArgumentParser(prog="python -m minivit.transfer.linear_probe",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("checkpoint", help="a train_cifar.py checkpoint of a ViT (.npz, or a run folder: its "
      "best.npz, else last.npz)")
    a("--classes", default="0,1,2,3,4,5,6,7,8,9", help="CIFAR-10 classes of the probe")
    a("--seeds", type=int, default=5, help="random draws of the shots (mean and spread)")
    a("--limit-test", type=int, help="evaluate on the first N test images of the classes")
    a("--data-dir", help="folder with cifar-10-python.tar.gz (default: $MINIVIT_DATA or "
      "~/.cache/minivit)")
    a("--out", help="write the results (JSON) here")
    args = ap.parse_args(argv)
    host, cfg, meta, classes, (x_tr, y_tr, x_te, y_te) = load_task(
        args.checkpoint, args.classes, args.data_dir)
    n_val = meta.get("train", {}).get("val_split", 0)        # never probe on validation images
    x_tr, y_tr = class_subset(x_tr[:len(x_tr) - n_val], y_tr[:len(y_tr) - n_val], classes)
    x_te, y_te = (a[:args.limit_test] for a in class_subset(x_te, y_te, classes))
    params = {k: backend.to_device(v, "float32") for k, v in host.items()}
    result = {"checkpoint": args.checkpoint, "classes": classes, "test_images": len(y_te),
              **fewshot_eval(params, cfg, x_tr, y_tr, x_te, y_te, seeds=args.seeds)}
    report(result, args.out)


if __name__ == "__main__":
    main()
