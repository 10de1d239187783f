"""--time-budget: the run's length is fitted after MEASURE_EPOCHS epochs from their wall times and
checked at CHECKS; a run on pace is the one a fixed --epochs of that length trains, one whose
pace changes is fitted again to end within the budget, and --resume keeps every decision."""
import itertools
import json
import os
import sys
import types

import pytest
from test_train import TC, TINY, run_history, synthetic

import minivit.runner
from minivit.budget import (
    CHECKS,
    MEASURE_EPOCHS,
    PACE_EPOCHS,
    TOLERANCE,
    check_due,
    check_pace,
    decide,
    describe,
    epoch_wall,
    fitted_epochs,
)
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
    (dict(time_budget=float("inf")), "a finite number of minutes > 0"),
    (dict(time_budget=5.0, warmup_epochs=1, res_schedule=((16, 5), (32, 5))),
     "--epochs N --warmup 3 "),
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


STOPS = {"epoch 2": (1, 2), "epoch 3's last step": (3, 0), "epoch 4": (3, 3),
         "the end of epoch 5": (5, 0)}             # (epochs, steps) trained before the stop


@pytest.mark.parametrize("slower", [1, 3])
@pytest.mark.parametrize("stop_in", list(STOPS))
def test_resume_keeps_or_makes_the_choice(tmp_path, clock, stop_in, slower):
    tc = TC.replace(epochs=50, warmup_epochs=MEASURE_EPOCHS, time_budget=2.0)
    whole = budget_run(tmp_path / "a", tc).start()
    whole.train()
    part = budget_run(tmp_path / "b", tc).start()
    epochs, steps = STOPS[stop_in]
    with pytest.raises(TrainingInterrupted):
        part.train(stop_after_steps=epochs * len(part.steps) + steps)
    made = epochs >= MEASURE_EPOCHS
    assert ("time_budget" in part.meta) == made
    clock.tick = slower                        # the resumed process runs 1x or 3x slower
    resumed = budget_run(tmp_path / "b", tc).resume()
    resumed.train()
    fit, fit_whole = resumed.meta["time_budget"], whole.meta["time_budget"]
    assert resumed.meta["epoch"] == fit["epochs"] > MEASURE_EPOCHS
    losses = [[r["train_loss"] for r in run.meta["history"]] for run in (whole, resumed)]

    def decisions(f):
        return f["epochs"], [(c["after_epoch"], c["epochs"]) for c in f["checks"]]
    if slower == 1 and made:       # fitted before the stop, checked at the same pace: the
        assert decisions(fit) == decisions(fit_whole)            # same run
        assert losses[0] == losses[1]
        if not steps:              # stopped between epochs: the same walls (no tick lost)
            assert fit == fit_whole
    if slower == 3:                # fitted or checked at the resumed pace: fewer epochs
        assert resumed.meta["epoch"] < whole.meta["epoch"]
        walls = sum(epoch_wall(r) for r in resumed.meta["history"])
        assert walls <= 120 + PACE_EPOCHS * 24     # a check sees the change PACE_EPOCHS late
        if made:                   # the fit was kept; the checks shrank the run
            first = ("seconds_per_epoch", "spent_s", "fit")
            assert [fit[k] for k in first] == [fit_whole[k] for k in first]
    assert losses[0][:MEASURE_EPOCHS] == losses[1][:MEASURE_EPOCHS]


def test_a_resume_decides_before_its_first_epoch(tmp_path, clock, monkeypatch):
    """A process killed after epoch 3's checkpoint and before its decision was saved: the
    resumed run fits the length before it trains epoch 4, as the first process would have."""
    tc = TC.replace(epochs=50, warmup_epochs=MEASURE_EPOCHS, time_budget=2.0)
    whole = budget_run(tmp_path / "a", tc).start()
    whole.train()
    part = budget_run(tmp_path / "b", tc).start()
    monkeypatch.setattr(part, "fit_budget", lambda: None)      # the decision never saved
    with pytest.raises(TrainingInterrupted):
        part.train(stop_after_steps=MEASURE_EPOCHS * len(part.steps))
    assert "time_budget" not in part.meta and part.meta["epoch"] == MEASURE_EPOCHS
    resumed = budget_run(tmp_path / "b", tc).resume()
    resumed.train()
    fit = resumed.meta["time_budget"]
    assert fit["epochs"] == whole.meta["time_budget"]["epochs"] == resumed.meta["epoch"]
    assert fit["spent_s"] == whole.meta["time_budget"]["spent_s"]


def fit_of(walls, budget_min=2.0, ceiling=1000):
    return fitted_epochs(budget_min, [rec(w) for w in walls], ceiling)


def test_checks_due_at_shares_of_the_fitted_epochs():
    fit = fit_of([40.0, 5.0, 7.0], budget_min=3.0)  # 24 epochs: 21 after the fit
    due = [d for d in range(1, 30) if check_due(fit, d)]
    assert due == [d for d in range(9, 24)]          # the first check from 3 + 21/4 on
    for at in [9, 14, 19, 22]:                       # 3 + 21 * CHECKS[n], rounded up
        assert check_due(fit, at) and not check_due(fit, at - 1)
        fit["checks"].append({"after_epoch": at})
        assert not check_due(fit, at)                # one decision an epoch
    assert CHECKS == (0.25, 0.5, 0.75, 0.9) and not check_due(fit, 23)
    assert not check_due({"epochs": 24}, 8) and check_due({"epochs": 24}, 9)   # older runs
    late = fit_of([40.0, 5.0, 7.0])                  # 14 epochs: the second check is due
    late["checks"].append({"after_epoch": 8})        # from 9, but PACE_EPOCHS after 8
    assert [d for d in range(1, 20) if check_due(late, d)] == [11, 12, 13]
    assert PACE_EPOCHS == 3


def test_check_pace_keeps_a_run_on_pace_and_refits_one_off_it():
    walls = [40.0, 5.0, 7.0]
    fit = fit_of(walls)                              # 14 epochs fit 120 s at 6 s
    line = check_pace(fit, [rec(w) for w in walls + [6.0, 6.0, 6.5]])
    assert fit["epochs"] == 14 and "14 epochs kept" in line
    assert fit["checks"][-1]["projected_end_s"] == 70.5 + 8 * 6.0   # within 1% of 120 s
    history = [rec(w) for w in walls + [6.0, 6.0, 6.5, 12.0, 12.0, 13.0]]   # twice as slow
    line = check_pace(fit, history)                  # the pace of epochs 7-9 alone: 12 s
    assert fit["checks"][-1]["seconds_per_epoch"] == 12.0
    assert fit["epochs"] == 9 + (120 - 107.5) // 12 == 10 and "14 -> 10 epochs" in line
    fast = fit_of(walls, ceiling=16)
    check_pace(fast, [rec(w) for w in walls + [3.0, 3.0, 3.0]])     # twice as fast
    assert fast["epochs"] == 16                      # the budget holds 6 + 43 // 3: capped
    over = fit_of(walls)
    check_pace(over, [rec(w) for w in walls + [30.0, 30.0, 30.0]])  # the budget is spent
    assert over["epochs"] == 6
    late = fit_of(walls)                             # the last check only shortens the run
    late["checks"] = [{"after_epoch": a} for a in (6, 9, 12)]
    check_pace(late, [rec(w) for w in walls + [1.0] * 10])
    assert late["epochs"] == 14 and len(late["checks"]) == len(CHECKS)
    early = fit_of(walls)                            # the same pace at the first check
    check_pace(early, [rec(w) for w in walls + [1.0] * 10])
    assert early["epochs"] == 13 + (120 - 62) // 1 == 71
    assert 0 < TOLERANCE < 0.05


@pytest.mark.parametrize("change", [0.5, 2.0])
def test_a_run_whose_pace_changes_is_fitted_again_and_ends_in_time(tmp_path, clock, change):
    """From epoch 6 on, every epoch takes `change` times as long as before: the checks fit the
    run again, so that it ends within the budget and near it."""
    tc = TC.replace(epochs=200, warmup_epochs=MEASURE_EPOCHS, time_budget=4.0)

    def log(line):
        if line.startswith("epoch 5/"):
            clock.tick = change
    run = budget_run(tmp_path / "a", tc, log).start()
    run.train()
    fit, history = run.meta["time_budget"], run.meta["history"]
    clock.tick = 1.0
    steady = budget_run(tmp_path / "b", tc).start()
    steady.train()
    walls = sum(epoch_wall(r) for r in history)
    per = history[-1]["wall_seconds"]
    assert 240 - per < walls <= 240                  # the budget, to within an epoch
    assert (run.meta["epoch"] < steady.meta["epoch"]) == (change > 1)
    assert (run.meta["epoch"] > steady.meta["epoch"]) == (change < 1)
    assert [c["after_epoch"] for c in fit["checks"]][:1] == [MEASURE_EPOCHS + -(
        -(fit["fit"] - MEASURE_EPOCHS) // 4)]


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


def test_replay_of_the_h100_runs_epoch_times():
    """benchmarks/replay_budget.py drives the same decide() over the H100 run's measured epoch
    times: the checks use the budget the first fit alone leaves unused (its epochs 2-3 were
    slower than the run's median), and they shrink a run that slows down by 30% from epoch 4,
    which the first fit alone would run 19% over."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "benchmarks"))
    import replay_budget
    with open(os.path.join(root, "benchmarks", "logs", "h100_full_seed0.jsonl")) as f:
        records = [json.loads(line) for line in f]
    lines = []
    for factor, slower in ((1.0, False), (1.3, True)):
        n, seconds, fit = replay_budget.replay(records, 18.5, 2000, 10, 0.2, factor, 4,
                                               lines.append)
        alone = sum(itertools.islice(replay_budget.walls(records, 0.2, factor, 4), fit["fit"]))
        assert len(fit["checks"]) == len(CHECKS) and (n < fit["fit"]) == slower
        assert (alone > 1.15 * 1110) == slower and alone > 0.9 * 1110
        assert 0.95 * 1110 < seconds <= 1110
    assert sum(line.startswith("time budget check") for line in lines) == 2 * len(CHECKS)


def decided(walls, budget_min, ceiling=2000, warmup=3):
    """decide() over an epoch per wall, as the run calls it: (epochs, seconds, log lines)."""
    history, fit, lines = [], None, []
    for wall in walls:
        if fit is not None and len(history) >= fit["epochs"]:
            break
        history.append(rec(wall))
        fit, line = decide(fit, history, budget_min, ceiling, warmup)
        lines += [line] if line else []
    return len(history), sum(walls[:len(history)]), lines


def test_the_last_check_a_short_run_gets_only_shortens_it():
    """A 10-epoch fit gets checks after epochs 6 and 9 only (PACE_EPOCHS apart): the one after 9
    must not grow the run, since no check would follow to catch the slower epochs after it."""
    n, seconds, lines = decided([40, 5, 5, 5, 5, 5, 4, 4, 4] + [8] * 20, 85 / 60)
    assert [line.split(":")[0] for line in lines[1:]] == [
        "time budget check after epoch 6", "time budget check after epoch 9"]
    assert n == 10 and seconds == 85 and lines[-1].endswith("10 epochs kept")


def test_check_lines_warn_and_name_the_cap():
    n, _, lines = decided([40, 5, 5] + [15] * 100, 3.92, warmup=15)    # 3x slower from epoch 4
    assert "40 -> 15 epochs" in lines[1] and "never decays" in lines[1] and n == 15
    n, _, lines = decided([40, 5, 5] + [2.5] * 200, 2.5, ceiling=40)     # 2x faster
    assert "23 -> 40 epochs (the budget holds" in lines[1] and "--epochs 40 caps it" in lines[1]
    assert n == 40
