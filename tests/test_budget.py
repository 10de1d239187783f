"""--time-budget: the run's length is fitted once, after MEASURE_EPOCHS epochs, from their
wall times; the run it trains is the one a fixed --epochs of that length trains, and --resume
keeps the choice."""
import types

import pytest
from test_train import TC, TINY, run_history, synthetic

import minivit.runner
from minivit.budget import MEASURE_EPOCHS, describe, epoch_wall, fitted_epochs
from minivit.recipes import TrainConfig
from minivit.runner import Run, TrainingInterrupted


def rec(wall):
    return {"wall_seconds": wall, "epoch_seconds": wall / 2}


def test_fitted_epochs_from_the_median_after_epoch_1():
    history = [rec(40.0), rec(5.0), rec(7.0)]            # epoch 1 compiles: not a sample
    why = fitted_epochs(2.0, history, ceiling=1000)
    assert why["seconds_per_epoch"] == 6.0 and why["spent_s"] == 52.0
    assert why["epochs"] == 3 + (120 - 52) // 6 == 14


def test_fitted_epochs_clamped_to_the_ceiling_and_to_what_ran():
    history = [rec(4.0), rec(4.0), rec(4.0)]
    assert fitted_epochs(60.0, history, ceiling=50)["epochs"] == 50
    assert fitted_epochs(0.1, history, ceiling=50)["epochs"] == 3  # spent already: stop here
    why = fitted_epochs(60.0, history, ceiling=50)
    assert why["fit"] == 3 + (3600 - 12) // 4 and "--epochs 50 caps it" in describe(why, 3)
    assert "caps" not in describe(fitted_epochs(1.0, history, ceiling=50), 3)
    assert "never decays" in describe(fitted_epochs(1.0, history, ceiling=50), 15)
    assert "never decays" not in describe(fitted_epochs(1.0, history, ceiling=50), 14)
    with pytest.raises(ValueError, match="2 or more"):
        fitted_epochs(1.0, history[:1], ceiling=50)


def test_epoch_wall_of_older_records():
    assert epoch_wall({"epoch_seconds": 3.0}) == 3.0
    assert epoch_wall({"epoch_seconds": 3.0, "val_seconds": 0.5}) == 3.5
    assert epoch_wall({"epoch_seconds": 3.0, "val_seconds": 0.5, "wall_seconds": 4.0}) == 4.0


@pytest.mark.parametrize("changes, match", [
    (dict(time_budget=0.0), "minutes > 0"),
    (dict(time_budget=float("nan")), "minutes > 0"),
    (dict(time_budget=float("inf")), "minutes > 0"),
    (dict(time_budget=5.0, epochs=MEASURE_EPOCHS), "--epochs above 3"),
    (dict(time_budget=5.0, epochs=4, res_schedule=((16, 2), (32, 2))), "--epochs N"),
    (dict(time_budget=5.0, warmup_epochs=2.5), "--warmup 3 or more"),
])
def test_config_refuses(changes, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{"warmup_epochs": 3, "epochs": 10, **changes})


@pytest.fixture
def clock(monkeypatch):
    """The runner's perf_counter advances clock.tick s a call (1 s unless a test changes it):
    every whole epoch takes the same time."""
    clock = types.SimpleNamespace(now=0.0, tick=1.0)

    def perf_counter():
        clock.now += clock.tick
        return clock.now
    monkeypatch.setattr(minivit.runner, "time", types.SimpleNamespace(perf_counter=perf_counter))
    return clock


def budget_run(path, tc, log=None):
    return Run(TINY, tc, path, synthetic(), bar=False, log=log or (lambda s: None))


@pytest.mark.usefixtures("clock")
def test_budget_run_is_the_fixed_run_of_its_length(tmp_path):
    tc = TC.replace(epochs=50, warmup_epochs=MEASURE_EPOCHS, mixup=0.2)
    lines = []
    run = budget_run(tmp_path / "budget", tc.replace(time_budget=1.0), lines.append).start()
    summary = run.train()
    per = run.meta["history"][1]["wall_seconds"]
    assert all(r["wall_seconds"] == per for r in run.meta["history"][1:])
    assert all(r["wall_seconds"] > r["epoch_seconds"] + r["val_seconds"] > r["epoch_seconds"]
               for r in run.meta["history"])      # the wall holds validation and checkpoints
    fitted = MEASURE_EPOCHS + int((60 - sum(r["wall_seconds"] for r in
                                            run.meta["history"][:MEASURE_EPOCHS])) // per)
    assert MEASURE_EPOCHS < fitted < 50
    assert summary["epochs"] == fitted == run.meta["time_budget"]["epochs"]
    assert any(line.startswith("time budget 1 min") for line in lines), lines
    fixed = budget_run(tmp_path / "fixed", tc.replace(epochs=fitted)).start()
    fixed.train()
    assert run_history(run) == run_history(fixed)
    assert [r["lr"] for r in run.meta["history"]] == [r["lr"] for r in fixed.meta["history"]]


@pytest.mark.parametrize("stop_in", ["epoch 2", "epoch 3's last step", "epoch 4"])
def test_resume_keeps_or_makes_the_choice(tmp_path, clock, stop_in):
    tc = TC.replace(epochs=50, warmup_epochs=MEASURE_EPOCHS, time_budget=2.0)
    whole = budget_run(tmp_path / "a", tc).start()
    whole.train()
    part = budget_run(tmp_path / "b", tc).start()
    steps = len(part.steps)
    stop_after = {"epoch 2": steps + 2, "epoch 3's last step": MEASURE_EPOCHS * steps,
                  "epoch 4": MEASURE_EPOCHS * steps + 3}[stop_in]
    with pytest.raises(TrainingInterrupted):
        part.train(stop_after_steps=stop_after)
    made = stop_after >= MEASURE_EPOCHS * steps
    assert ("time_budget" in part.meta) == made
    clock.tick = 3.0                           # the resumed process runs 3x slower
    resumed = budget_run(tmp_path / "b", tc).resume()
    resumed.train()
    assert resumed.meta["epoch"] == resumed.meta["time_budget"]["epochs"] > MEASURE_EPOCHS
    losses = [[r["train_loss"] for r in run.meta["history"]] for run in (whole, resumed)]
    if made:          # chosen before the stop, at the first process's speed: the same run
        assert resumed.meta["time_budget"] == whole.meta["time_budget"]
        assert losses[0] == losses[1]
    else:             # chosen after the resume, at its speed: fewer epochs; the same first ones
        assert resumed.meta["epoch"] < whole.meta["epoch"]
        assert losses[0][:MEASURE_EPOCHS] == losses[1][:MEASURE_EPOCHS]


@pytest.mark.usefixtures("clock")
def test_a_run_fitted_to_its_first_epochs_is_finished(tmp_path):
    """A budget spent by epoch 3 ends the run there, and resuming it trains nothing more. With
    the fake clock an epoch's wall is 8 s and its training plus validation 7 s: 31.5 s fits 3
    epochs (24 s spent), but a refit from a checkpoint without epoch 3's wall would fit 4."""
    tc = TC.replace(epochs=50, warmup_epochs=MEASURE_EPOCHS, time_budget=0.525)
    run = budget_run(tmp_path / "a", tc).start()
    assert run.train()["epochs"] == MEASURE_EPOCHS
    again = budget_run(tmp_path / "a", tc).resume()
    assert again.train()["epochs"] == MEASURE_EPOCHS == len(again.meta["history"])

