"""Progressive resizing: area shrinking, E_pos averaged onto a smaller grid and its gradient
pulled back (checked by central differences), schedules validated, a scheduled run resumes
bit-exactly across a change of size, and the --res-schedule flag."""
import inspect

import numpy as np
import pytest
from conftest import assert_gradcheck, torch_or_skip
from test_train import TC, TINY, run_history, synthetic

from minivit import ViTConfig, init_params, runner, vit_backward, vit_forward
from minivit.data.loader import eval_batch
from minivit.gradcheck import check_gradients
from minivit.hybrid import HybridConfig
from minivit.models import predict_probs
from minivit.progressive import at_resolution, check_schedule, shrink_images, size_at
from minivit.recipes import TrainConfig
from minivit.runner import Run, TrainingInterrupted
from minivit.train import evaluate
from minivit.transfer.resize import interpolation_matrix, resize_grid


def test_area_shrink_by_two_is_the_mean_of_2x2_blocks():
    x = np.random.default_rng(0).standard_normal((3, 2, 8, 8))
    expected = x.reshape(3, 2, 4, 2, 4, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(shrink_images(x, 4), expected, atol=1e-15)


@pytest.mark.parametrize("n_in,n_out", [(8, 6), (8, 3), (32, 24), (5, 5)])
def test_area_weights_cover_each_input_once(n_in, n_out):
    M = interpolation_matrix(n_in, n_out, "area")
    np.testing.assert_allclose(M.sum(axis=1), 1.0, atol=1e-15)           # a mean per output
    np.testing.assert_allclose(M.sum(axis=0), n_out / n_in, atol=1e-15)  # every input counted
    assert (M >= 0).all()


def test_area_matches_torch_for_integer_factors():
    torch = torch_or_skip()
    g = np.random.default_rng(1).standard_normal((8, 12, 3))
    x = torch.from_numpy(g).permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(x, size=(4, 3), mode="area")[0].permute(1, 2, 0)
    np.testing.assert_allclose(resize_grid(g, (4, 3), "area"), ref.numpy(), atol=1e-14)


def test_area_refuses_to_enlarge():
    with pytest.raises(ValueError, match="only shrinks"):
        interpolation_matrix(4, 8, "area")


@pytest.mark.parametrize("size", [4, 6])                 # grid 4x4 -> 2x2 and -> 3x3
@pytest.mark.parametrize("pool", ["cls", "gap"])
def test_pos_embed_gradient_pulled_back_matches_central_differences(size, pool):
    cfg = ViTConfig(image_size=8, patch_size=2, in_channels=3, num_classes=3, dim=8, depth=1,
                    heads=2, mlp_dim=16, pool=pool)
    params = init_params(cfg, seed=0, dtype="float64")
    params["head.weight"] = np.random.default_rng(2).standard_normal(params["head.weight"].shape)
    x = np.random.default_rng(3).standard_normal((2, 3, size, size))

    def forward(pos_embed, **rest):
        small, small_cfg, pull_back = at_resolution({**params, "pos_embed": pos_embed, **rest},
                                                    cfg, size)
        logits, cache = vit_forward(small, x, small_cfg)
        return logits, (cache, pull_back)

    def backward(G, cache):
        _, grads = vit_backward(G, cache[0], input_grad=False)
        return cache[1](grads)

    inputs = {"pos_embed": params["pos_embed"].copy(),
              "patch_embed.weight": params["patch_embed.weight"].copy()}
    assert_gradcheck(check_gradients(forward, backward, inputs))


def test_full_size_is_the_identity():
    params = init_params(TINY, 0, "float32")
    same, cfg, pull_back = at_resolution(params, TINY, 32)
    assert same is params and cfg is TINY and pull_back({"a": 1}) == {"a": 1}


def test_schedules_are_checked():
    check_schedule(((16, 2), (32, 1)), TINY)
    check_schedule((), TINY)
    assert [size_at(((16, 2), (24, 1)), e) for e in range(4)] == [16, 16, 24, None]
    with pytest.raises(ValueError, match=r"covers 2 epoch\(s\), the run has 3"):
        TrainConfig(epochs=3, res_schedule=((16, 2),))
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        check_schedule(((12, 3),), TINY)
    with pytest.raises(ValueError, match="up to 32"):
        check_schedule(((40, 3),), TINY)
    with pytest.raises(ValueError, match="pos_embed '2d'"):
        check_schedule(((16, 3),), TINY.replace(pos_embed="2d"))
    with pytest.raises(ValueError, match="plain ViT"):
        check_schedule(((16, 3),), HybridConfig(), "hybrid")
    with pytest.raises(ValueError, match=r"covers 4 epoch\(s\), the run has 3"):
        TrainConfig(epochs=3, res_schedule=((16, 4),))


@pytest.mark.parametrize("stop_after", [3, 7])          # inside the 16 px epoch, then at 32 px
def test_scheduled_run_resumes_bit_exactly(tmp_path, stop_after):
    data = synthetic()
    tc = TC.replace(res_schedule=((16, 1), (24, 1), (32, 1)))
    cfg = TINY
    whole = Run(cfg, tc, tmp_path / "a", data, bar=False, log=lambda s: None).start()
    whole.train()
    assert [r["image_size"] for r in whole.meta["history"]] == [16, 24, 32]
    assert [r["val_image_size"] for r in whole.meta["history"]] == [16, 24, 32]
    assert whole.meta["best_epoch"] == 3                  # the one full-size validation
    part = Run(cfg, tc, tmp_path / "b", data, bar=False, log=lambda s: None).start()
    with pytest.raises(TrainingInterrupted):
        part.train(stop_after_steps=stop_after)
    resumed = Run(cfg, tc, tmp_path / "b", data, bar=False, log=lambda s: None).resume()
    resumed.train()
    assert run_history(resumed) == run_history(whole)
    for k, v in whole.params.items():
        np.testing.assert_array_equal(resumed.params[k], v, err_msg=k)
    assert whole.params["pos_embed"].shape == init_params(cfg, 0, "float32")["pos_embed"].shape


def test_res_schedule_flag(capsys):
    import train_cifar
    args = train_cifar.parse_args(["--recipe", "smoke", "--res-schedule", "16:2,32:3"])
    cfg, tc = train_cifar.build_config(args)
    assert tc.res_schedule == ((16, 2), (32, 3)) and tc.epochs == 5
    with pytest.raises(SystemExit):
        train_cifar.parse_args(["--res-schedule", "16-2"])
    assert "SIZE:EPOCHS" in capsys.readouterr().err


def test_epochs_alone_drops_the_recipe_schedule_and_other_models_are_told(capsys):
    import train_cifar
    cfg, tc = train_cifar.build_config(train_cifar.parse_args(["--recipe", "cpu-hour"]))
    assert tc.res_schedule and tc.epochs == sum(n for _, n in tc.res_schedule)
    args = train_cifar.parse_args(["--recipe", "cpu-hour", "--epochs", "3"])
    cfg, tc = train_cifar.build_config(args)
    assert tc.res_schedule == () and tc.epochs == 3
    assert "all at full size" in capsys.readouterr().out
    for flags in (["--model", "hybrid"], ["--pos-embed", "2d"]):
        with pytest.raises(ValueError, match="give --epochs N"):
            train_cifar.build_config(train_cifar.parse_args(["--recipe", "cpu-hour", *flags]))
    with pytest.raises(ValueError, match=r"recipe cpu-hour's resolution schedule .*does not fit "
                                         r"this model: .*patch size 16.*Give --epochs N"):
        train_cifar.build_config(train_cifar.parse_args(["--recipe", "cpu-hour", "--patch", "16"]))
    cfg, tc = train_cifar.build_config(train_cifar.parse_args(
        ["--recipe", "cpu-hour", "--patch", "16", "--epochs", "2"]))
    assert tc.res_schedule == () and cfg.patch_size == 16
    cfg, tc = train_cifar.build_config(train_cifar.parse_args(
        ["--recipe", "cpu-hour", "--model", "hybrid", "--epochs", "4"]))
    assert tc.res_schedule == () and tc.epochs == 4


def test_validation_at_a_smaller_size_runs_the_shrunk_model():
    """evaluate(size=16): the model at_resolution(16) on the area-shrunk images, as training
    sees them; a different result from the full-size evaluation."""
    x, y = (a[:40] for a in synthetic()[:2])
    params = init_params(TINY, 3, "float64")
    params["head.weight"] = np.random.default_rng(1).standard_normal((16, 10))  # not uniform
    tc = TC.replace(dtype="float64", eval_batch_size=16)
    small_params, small_cfg, _ = at_resolution(params, TINY, 16)
    probs = predict_probs(small_params, shrink_images(eval_batch(x, "float64"), 16), small_cfg)
    expected = (-np.log(probs[np.arange(40), y]).mean(), (probs.argmax(1) == y).mean())
    np.testing.assert_allclose(evaluate(params, TINY, x, y, tc, size=16), expected, rtol=1e-12)
    assert evaluate(params, TINY, x, y, tc)[0] != pytest.approx(expected[0], rel=1e-6)


def test_a_run_ending_below_full_size_validates_its_last_epoch_at_full_size(tmp_path):
    tc = TC.replace(res_schedule=((16, 2), (24, 1)))
    run = Run(TINY, tc, tmp_path, synthetic(), bar=False, log=lambda s: None).start()
    run.train()
    assert [r["val_image_size"] for r in run.meta["history"]] == [16, 16, 32]
    assert run.meta["best_epoch"] == 3


def test_only_full_size_validations_choose_best(tmp_path, monkeypatch):
    real = runner.evaluate

    def flattering(*args, **kw):        # a reduced-size validation scores above any full-size
        loss, acc = real(*args, **kw)
        size = inspect.signature(real).bind(*args, **kw).arguments.get("size")
        return loss, acc + 2.0 * (size is not None)

    monkeypatch.setattr(runner, "evaluate", flattering)
    tc = TC.replace(res_schedule=((16, 2), (32, 1)))
    run = Run(TINY, tc, tmp_path, synthetic(), bar=False, log=lambda s: None).start()
    run.train()
    history = run.meta["history"]
    assert [r["val_acc"] > 2 for r in history] == [True, True, False]
    assert run.meta["best_epoch"] == 3 and run.meta["best_val_acc"] == history[2]["val_acc"]
