"""Few-shot linear evaluation (the paper's Sec. 4.1 and big_vision's few-shot evaluator).

The network is frozen; its pre-logits y = LN(z_L^0) (the final-LN class token, eq. 4; the
token mean for pool="gap") are the features. For each class, `shots` training images are
drawn; a linear map is fitted in closed form by regularised least squares to {-1, 1}^K targets:
    x <- (x - mean) / (std + 1e-5)   (per feature, over the few-shot set: "whitening")
    X = [x, 100]                      (a large constant bias feature, so barely regularised)
    Y = 2 onehot(labels) - 1
    W = (X^T X + lambda I)^{-1} X^T Y = X^T (X X^T + lambda I)^{-1} Y,   lambda = 2^10
(the second form when there are fewer points than features), and a test image gets the class
argmax_k (x W)_k. Accuracy on the held-out images is reported per shot count.
"""
import numpy as np

from ..backend import get_array_module, to_numpy
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
