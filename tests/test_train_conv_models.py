"""Training the conv models through the same loop: BatchNorm running statistics are carried
through training, saved in checkpoints (resume stays bit-exact), used at evaluation, and their
scales are not weight-decayed; train_cifar.py --model picks the model."""
import json

import numpy as np
import pytest
from cifar_fixture import make_batches, write_archive
from test_cmt import TINY as CMT_TINY
from test_hybrid import TINY as HYBRID_TINY
from test_train import TC, run_history, synthetic
from test_train_cli import train_cifar

from minivit import runner
from minivit.backend import to_device
from minivit.checkpoint import load_checkpoint, load_state
from minivit.models import batchnorm_params, get_model, model_name
from minivit.runner import Run, TrainingInterrupted
from minivit.train import evaluate, split_data

CONFIGS = {"hybrid": HYBRID_TINY.replace(image_size=32, num_classes=10),
           "cmt": CMT_TINY.replace(num_classes=10)}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_resume_is_bit_exact_with_bn_state(tmp_path, name):
    cfg, data = CONFIGS[name], synthetic(48, 16)
    tc = TC.replace(epochs=2, val_split=8)
    whole = Run(cfg, tc, tmp_path / "a", data, bar=False, log=lambda s: None).start()
    whole.train()
    part = Run(cfg, tc, tmp_path / "b", data, bar=False, log=lambda s: None).start()
    with pytest.raises(TrainingInterrupted):
        part.train(stop_after_steps=3)                    # mid-epoch 2
    state = load_state(tmp_path / "b" / "last.npz")
    assert set(state) == set(get_model(name).init_state(cfg, "float32"))
    assert not np.allclose(state[next(iter(state))], 0.0)  # running means have moved
    resumed = Run(cfg, tc, tmp_path / "b", data, bar=False, log=lambda s: None).resume()
    resumed.train()
    assert run_history(resumed) == run_history(whole)
    for k, v in {**whole.params, **whole.state}.items():
        np.testing.assert_array_equal({**resumed.params, **resumed.state}[k], v, err_msg=k)


def test_evaluation_uses_the_checkpointed_running_stats(tmp_path):
    cfg, data = CONFIGS["hybrid"], synthetic(48, 16)
    tc = TC.replace(epochs=1, val_split=8)
    summary = Run(cfg, tc, tmp_path, data, bar=False, log=lambda s: None).start().train()
    params = {k: to_device(v) for k, v in load_checkpoint(tmp_path / "best.npz")[0].items()}
    state = {k: to_device(v) for k, v in load_state(tmp_path / "best.npz").items()}
    x, y = split_data(data, tc)["test"]
    loss, acc = evaluate(params, cfg, to_device(x), to_device(y), tc, state)
    assert (loss, acc) == (summary["best_test_loss"], summary["best_test_acc"])
    fresh = get_model("hybrid").init_state(cfg, "float32")     # other stats: other predictions
    assert evaluate(params, cfg, to_device(x), to_device(y), tc, fresh)[0] != loss


def test_an_earlier_best_epoch_is_tested_from_best_npz(tmp_path, monkeypatch):
    cfg, data = CONFIGS["hybrid"], synthetic(48, 16)
    tc = TC.replace(epochs=2, val_split=8)
    real, calls = runner.evaluate, []

    def first_epoch_best(*args, **kw):  # validation: epoch 1 scores best; the test: real
        calls.append(None)
        return real(*args, **kw) if len(calls) > tc.epochs else (1.0, 1.0 / len(calls))

    monkeypatch.setattr(runner, "evaluate", first_epoch_best)
    summary = Run(cfg, tc, tmp_path, data, bar=False, log=lambda s: None).start().train()
    assert summary["best_epoch"] == 1 and summary["epochs"] == 2
    params = {k: to_device(v) for k, v in load_checkpoint(tmp_path / "best.npz")[0].items()}
    state = {k: to_device(v) for k, v in load_state(tmp_path / "best.npz").items()}
    x, y = split_data(data, tc)["test"]
    best = real(params, cfg, to_device(x), to_device(y), tc, state)
    assert best == (summary["best_test_loss"], summary["best_test_acc"])
    assert best[0] != summary["final_test_loss"]                  # not the final model's


def test_batchnorm_scales_are_not_decayed():
    cfg = CONFIGS["cmt"]
    state = get_model("cmt").init_state(cfg, "float32")
    names = batchnorm_params(state)
    assert "stem_norm1.weight" in names and "blocks_a.0.attn.sr.1.weight" in names
    assert "blocks_a.0.mlp.conv1.2.weight" in names and "_bn.bias" in names
    assert not any(".norm1." in n or "conv1.0." in n for n in names)   # LayerNorm, conv
    assert len(names) == len(state)                       # weight, bias <-> mean, var


def test_cli_model_flag(tmp_path, capsys):
    write_archive(tmp_path / "cifar-10-python.tar.gz", make_batches(n=8))
    out = tmp_path / "run"
    flags = ["--data-dir", str(tmp_path), "--val-split", "8", "--limit-test", "8",
             "--limit-train", "8", "--batch-size", "8", "--epochs", "1", "--no-progress"]
    assert train_cifar.main(["--recipe", "smoke", "--model", "hybrid", "--dim", "16", "--depth",
                             "1", "--heads", "2", "--mlp-dim", "16", *flags, "--out",
                             str(out)]) == 0
    assert "model: hybrid" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    assert saved["arch"] == "hybrid" and model_name(
        get_model("hybrid").from_dict(saved["model"])) == "hybrid"
    assert load_state(out / "best.npz")
    assert train_cifar.main(["--eval-only", str(out / "best.npz"), "--data-dir",
                             str(tmp_path)]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert train_cifar.main(["--resume", str(out), "--model", "cmt"]) == 2
    assert "trains --model hybrid, not cmt" in capsys.readouterr().err
    assert train_cifar.main(["--model", "cmt", "--patch", "8", *flags]) == 2
    assert "--model cmt does not take --patch" in capsys.readouterr().err
