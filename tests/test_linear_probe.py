"""Few-shot linear probe: the closed form against an independent least-squares solve, both
branches (more points than features and fewer), synthetic separable data, frozen features."""
import numpy as np
import pytest

from minivit import ViTConfig, init_params, vit_forward
from minivit.transfer.linear_probe import (
    BIAS_CONSTANT,
    L2_REG,
    fewshot_accuracy,
    fit_least_squares,
    predict_least_squares,
    prelogits,
)


@pytest.mark.parametrize("n,D", [(60, 8), (12, 40)])
def test_closed_form_matches_augmented_lstsq(n, D):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n, D)) * 3 + 1, rng.integers(0, 4, n)
    model = fit_least_squares(x, y, 4)
    # ridge as ordinary least squares on [X; sqrt(lambda) I] W = [Y; 0]
    xs = (x - x.mean(0)) / (x.std(0) + 1e-5)
    X = np.concatenate([xs, np.full((n, 1), BIAS_CONSTANT)], axis=1)
    Y = 2.0 * np.eye(4)[y] - 1.0
    A = np.concatenate([X, np.sqrt(L2_REG) * np.eye(D + 1)])
    B = np.concatenate([Y, np.zeros((D + 1, 4))])
    W_ref = np.linalg.lstsq(A, B, rcond=None)[0]
    np.testing.assert_allclose(model["W"], W_ref, rtol=1e-8, atol=1e-10)


def test_fewshot_on_separable_synthetic_data():
    rng = np.random.default_rng(1)
    K, D = 5, 32
    centres = rng.standard_normal((K, D)) * 4

    def sample(per_class):
        y = np.repeat(np.arange(K), per_class)
        return centres[y] + rng.standard_normal((len(y), D)), y
    (xtr, ytr), (xte, yte) = sample(30), sample(40)
    acc = fewshot_accuracy(xtr, ytr, xte, yte, shots=(1, 5, 10, 25))
    assert set(acc) == {1, 5, 10, 25}
    assert acc[25] == 1.0 and acc[10] == 1.0 and acc[1] > 0.5
    # random labels carry nothing: near chance
    chance = fewshot_accuracy(xtr, rng.permutation(ytr), xte, yte, shots=(25,))[25]
    assert chance < 0.45
    with pytest.raises(ValueError, match="50-shot needs 50"):
        fewshot_accuracy(xtr, ytr, xte, yte, shots=(50,))


def test_prediction_is_argmax_of_the_fitted_map():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((20, 3)), rng.integers(0, 3, 20)
    m = fit_least_squares(x, y, 3)
    X = np.concatenate([(x - m["mean"]) / m["std"], np.full((20, 1), 100.0)], 1)
    np.testing.assert_array_equal(predict_least_squares(m, x), (X @ m["W"]).argmax(1))


def test_prelogits_are_the_final_ln_class_token():
    cfg = ViTConfig(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2, mlp_dim=8)
    params = init_params(cfg, seed=0, dtype="float64", zero_head=False)
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8))
    f = prelogits(params, x, cfg, batch_size=2)
    assert f.shape == (5, 8)
    # through the real head they give the logits
    np.testing.assert_allclose(f @ params["head.weight"] + params["head.bias"],
                               vit_forward(params, x, cfg)[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(f.mean(1), params["norm.bias"].mean(), atol=1e-12)


def test_cli_reports_mean_and_spread_over_draws(tmp_path, capsys):
    import json

    from minivit import ViTConfig, init_params
    from minivit.checkpoint import save_checkpoint
    from minivit.transfer.linear_probe import main
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (100, 3, 32, 32), dtype=np.uint8)
    y = np.arange(100, dtype=np.int64) % 10
    np.savez(tmp_path / "cifar-10-uint8.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
    cfg = ViTConfig(image_size=32, patch_size=8, num_classes=10, dim=16, depth=1, heads=2,
                    mlp_dim=32)
    save_checkpoint(str(tmp_path / "m.npz"), init_params(cfg, seed=0), {"step": 0},
                    {"model": cfg.to_dict(), "train": {"val_split": 20}})
    main([str(tmp_path / "m.npz"), "--classes", "2,3", "--seeds", "3", "--data-dir",
          str(tmp_path), "--out", str(tmp_path / "r.json")])
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["test_images"] == 8 and r["seeds"] == 3        # 4 + 4 test images of classes 2, 3
    assert set(r["shots"]) == set(r["std"]) == {"1", "5"}   # 8 a class: val left out, no 10
    assert all(0.0 <= v <= 1.0 for v in r["shots"].values())
