"""Fine-tuning: a zero D x K head, the paper's SGD + clipping recipe learning a small synthetic
task, at the training resolution and at a higher one; class subsets."""
import numpy as np

from minivit import ViTConfig, init_params, param_shapes
from minivit.transfer.finetune import (
    FinetuneConfig,
    accuracy,
    class_subset,
    finetune,
    prepare,
    replace_head,
)

CFG = ViTConfig(image_size=16, patch_size=4, num_classes=10, dim=32, depth=2, heads=2,
                mlp_dim=64)


def colour_task(n, seed):
    """uint8 images whose label is the brightest colour channel (3 classes)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 120, (n, 3, 16, 16))
    x[np.arange(n), y] += 120
    return x.astype(np.uint8), y.astype(np.int64)


def test_replace_head_is_zero_and_keeps_the_rest():
    params = init_params(CFG, seed=0, zero_head=False)
    new, cfg = replace_head(params, CFG, 4)
    assert cfg.num_classes == 4 and new["head.weight"].shape == (32, 4)
    assert not new["head.weight"].any() and not new["head.bias"].any()
    assert all(new[k] is params[k] for k in params if not k.startswith("head."))


def test_class_subset_relabels():
    x, y = np.arange(10)[:, None], np.array([0, 5, 6, 5, 9, 1, 6, 7, 8, 5])
    xs, ys = class_subset(x, y, [5, 6, 7, 8, 9])
    assert ys.tolist() == [0, 1, 0, 4, 1, 2, 3, 0] and xs[:, 0].tolist() == [1, 2, 3, 4, 6, 7, 8, 9]


def test_finetune_learns_a_new_task_at_a_higher_resolution():
    params = init_params(CFG, seed=0)
    params, cfg = prepare(params, CFG, num_classes=3, image_size=24)
    assert cfg.image_size == 24 and {k: v.shape for k, v in params.items()} == param_shapes(cfg)
    x, y = colour_task(96, 0)
    xt, yt = colour_task(48, 1)
    before = accuracy(params, cfg, xt, yt)
    assert before == 1 / 3                           # zero head: every logit equal, class 0
    log = finetune(params, cfg, x, y, FinetuneConfig(steps=40, batch_size=32, lr=0.03,
                                                     warmup_steps=5), progress=False)
    assert len(log) == 40 and log[-1][1] < log[0][1]
    assert accuracy(params, cfg, xt, yt) > 0.9


def test_cli_transfers_to_other_classes_at_48px(tmp_path, capsys):
    import json

    from minivit.checkpoint import save_checkpoint
    from minivit.transfer.finetune import main
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8)
    y = np.arange(60, dtype=np.int64) % 10
    np.savez(tmp_path / "cifar-10-uint8.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    cfg = CFG.replace(image_size=32, patch_size=8)
    save_checkpoint(str(tmp_path / "m.npz"), init_params(cfg, seed=0), {"step": 0},
                    {"model": cfg.to_dict()})
    main([str(tmp_path / "m.npz"), "--classes", "5,6,7,8,9", "--image-size", "48", "--steps",
          "2", "--batch-size", "8", "--fewshot", "--data-dir", str(tmp_path),
          "--out", str(tmp_path / "r.json")])
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["image_size"] == 48 and r["train_images"] == 30 and r["classes"] == [5, 6, 7, 8, 9]
    assert set(r["fewshot"]) == {"1", "5"}                # 6 images a class: 10, 25 left out
    assert 0.0 <= r["test_accuracy"] <= 1.0
