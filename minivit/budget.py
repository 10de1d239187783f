"""A run that fits a time budget: train as many epochs as fit in --time-budget minutes.

The cosine schedule needs its length before it starts decaying, and a run's speed is known only
once it runs. So the first MEASURE_EPOCHS epochs run with the schedule still open. Epoch 1 is not
a fair sample: on CuPy it compiles every kernel (~37 s of the H100 run's 41 s epoch 1). Then,
before epoch MEASURE_EPOCHS + 1 starts, the run fits its length:

    epochs = MEASURE_EPOCHS + floor((budget - spent) / median wall of epochs 2..MEASURE_EPOCHS)

clamped to [MEASURE_EPOCHS, --epochs]. An epoch's wall is its training steps, validation and
checkpoints. Loading the data and the final test come on top of the budget. With a warmup of at
least MEASURE_EPOCHS epochs the learning rate so far did not depend on the length (the linear
warmup does not).

A shared machine's pace drifts: the H100 run of BENCHMARKS.md took 4.6 s an epoch at first and
4.2 s on average, between 2.95 and 5.55 s. So the run checks its pace when CHECKS (a quarter, a
half, three quarters and nine tenths) of its fitted epochs after the first MEASURE_EPOCHS have
run, each with PACE_EPOCHS or more epochs since the last decision. A check takes the median
wall of the epochs since the last decision; when the run at that pace would end more than
TOLERANCE of the budget away from it, the same formula fits the length again from what is left,
and the cosine follows the new length from there (its progress moves by a few per cent). A
check after which no other can come (the last of CHECKS, or one too close to the end) only
shortens the run: nothing would catch a pace that slows again. A run on pace is the one a fixed
--epochs of its length trains. Every decision is saved in the checkpoint, so --resume keeps it.
"""
import math
import statistics

MEASURE_EPOCHS = 3
CHECKS = (0.25, 0.5, 0.75, 0.9)  # shares of the fitted epochs after MEASURE_EPOCHS: checks
PACE_EPOCHS = 3                  # epochs since the last decision a check needs for its pace
TOLERANCE = 0.01                 # share of the budget the projected end may miss it by


def check_budget(minutes: float, epochs: int, warmup_epochs: float, res_schedule) -> None:
    """Refuse a budget this fitting cannot honour, naming the flag to change."""
    if not 0 < minutes < math.inf:
        raise ValueError(f"--time-budget takes a finite number of minutes > 0, got {minutes}")
    if epochs <= MEASURE_EPOCHS:
        raise ValueError(f"--time-budget fits the run's length after epoch {MEASURE_EPOCHS}: "
                         f"give --epochs above {MEASURE_EPOCHS} (the most epochs), got {epochs}")
    if res_schedule:
        warmup = f" --warmup {MEASURE_EPOCHS}" if warmup_epochs < MEASURE_EPOCHS else ""
        raise ValueError(f"--time-budget fits epochs of one image size, not a resolution "
                         f"schedule: give --epochs N{warmup} (the most epochs, all at full "
                         f"size{'; and the warmup the budget needs' if warmup else ''})")
    if warmup_epochs < MEASURE_EPOCHS:
        raise ValueError(f"--time-budget fits the run's length after epoch {MEASURE_EPOCHS}, "
                         f"so the cosine must not start before it: give --warmup "
                         f"{MEASURE_EPOCHS} or more (got {warmup_epochs:g})")


def epoch_wall(rec: dict) -> float:
    """Seconds an epoch of the log took: training, validation and checkpoints. wall_seconds is
    known only after the epoch's checkpoint is written, so a checkpoint's last record lacks it
    (and records from before this module, val_seconds too): they count what they hold."""
    if "wall_seconds" in rec:
        return rec["wall_seconds"]
    return rec["epoch_seconds"] + rec.get("val_seconds", 0.0)


def fitted_epochs(budget_min: float, history: list, ceiling: int) -> dict:
    """The fit for a run whose finished epochs are `history`: "epochs", as many as fit in
    budget_min minutes at the median wall of its epochs after the first, at most `ceiling` and
    never fewer than those already trained; with what it was computed from."""
    done = len(history)
    if done < 2:
        raise ValueError(f"fitting a time budget needs 2 or more finished epochs, got {done}")
    per = statistics.median(epoch_wall(r) for r in history[1:])
    spent = sum(epoch_wall(r) for r in history)
    fit = done + max(0, math.floor((budget_min * 60 - spent) / per))
    return {"budget_min": budget_min, "seconds_per_epoch": per, "spent_s": spent, "fit": fit,
            "ceiling": ceiling, "epochs": max(done, min(ceiling, fit)), "checks": []}


def decide(fit, history: list, budget_min: float, ceiling: int, warmup_epochs: float):
    """The budget's decision after the finished epochs `history`, where one is due: (fit, a
    line for the log, or None when nothing was decided). fit is None until the length is fitted
    after MEASURE_EPOCHS epochs; then each of CHECKS updates it in place."""
    if fit is None:
        if len(history) < MEASURE_EPOCHS:
            return None, None
        fit = fitted_epochs(budget_min, history, ceiling)
        return fit, describe(fit, warmup_epochs)
    due = check_due(fit, len(history))
    return fit, check_pace(fit, history, warmup_epochs) if due else None


def first_due(n_checks: int, since: int, epochs: int) -> int:
    """The first epoch after which check number n_checks (from 0) is due in a run of `epochs`
    whose last decision came after epoch `since`; a value >= epochs: it never comes."""
    if n_checks >= len(CHECKS):
        return epochs
    share = MEASURE_EPOCHS + (epochs - MEASURE_EPOCHS) * CHECKS[n_checks]
    return max(since + PACE_EPOCHS, math.ceil(share))


def check_due(fit: dict, done: int) -> bool:
    """Whether the next of CHECKS is due after `done` finished epochs of the fitted run, with
    PACE_EPOCHS or more epochs since the last decision to measure its pace."""
    checks = fit.get("checks", [])              # runs saved before the checks have none
    since = checks[-1]["after_epoch"] if checks else MEASURE_EPOCHS
    return first_due(len(checks), since, fit["epochs"]) <= done < fit["epochs"]


def check_pace(fit: dict, history: list, warmup_epochs: float = 0.0) -> str:
    """Check the run's pace after its finished epochs `history`: append the check to
    fit["checks"] and, when the projected end misses the budget by more than TOLERANCE, fit
    fit["epochs"] again from what is left; longer only if a later check can still come.
    Returns a line for the log."""
    checks = fit.setdefault("checks", [])
    done, was, ceiling = len(history), fit["epochs"], fit["ceiling"]
    since = checks[-1]["after_epoch"] if checks else MEASURE_EPOCHS
    pace = statistics.median(epoch_wall(r) for r in history[since:])
    spent = sum(epoch_wall(r) for r in history)
    budget = fit["budget_min"] * 60
    end = spent + (was - done) * pace
    holds = done + max(0, math.floor((budget - spent) / pace))     # what the budget holds
    new = was if abs(end - budget) <= TOLERANCE * budget else max(done, min(ceiling, holds))
    if new > was and first_due(len(checks) + 1, done, new) >= new:
        new = was                  # no check after this one: it may only shorten the run
    fit["epochs"] = new
    checks.append({"after_epoch": done, "seconds_per_epoch": pace, "spent_s": spent,
                   "projected_end_s": end, "epochs": new})
    line = (f"time budget check after epoch {done}: {pace:.2f} s an epoch since epoch {since}, "
            f"{spent:.0f} s spent, would end at {end:.0f} of {budget:.0f} s: "
            + (f"{was} -> {new} epochs" if new != was else f"{was} epochs kept"))
    if holds > ceiling and new == ceiling:
        line += f" (the budget holds {holds}; --epochs {ceiling} caps it)"
    return line + warmup_warning(new, warmup_epochs)


def warmup_warning(epochs: int, warmup_epochs: float) -> str:
    """The log's warning for a length that ends within the warmup ("" otherwise)."""
    if epochs > warmup_epochs:
        return ""
    shorter = f" or a --warmup nearer {MEASURE_EPOCHS}" if warmup_epochs > MEASURE_EPOCHS else ""
    return (f"; warning: that ends within the {warmup_epochs:g}-epoch warmup, so the learning "
            f"rate never decays (a larger budget{shorter})")


def describe(why: dict, warmup_epochs: float) -> str:
    """One line for the log: what was measured and what was chosen."""
    line = (f"time budget {why['budget_min']:g} min: {why['spent_s']:.0f} s spent, "
            f"{why['seconds_per_epoch']:.2f} s an epoch from now -> {why['epochs']} epochs")
    if why["fit"] > why["ceiling"]:
        line += (f" (the budget holds {why['fit']}; --epochs {why['ceiling']} caps it, give a "
                 f"larger --epochs to train longer)")
    return line + warmup_warning(why["epochs"], warmup_epochs)
