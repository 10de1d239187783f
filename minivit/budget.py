"""A run that fits a time budget: train as many epochs as fit in --time-budget minutes.

The cosine schedule needs its length before it starts decaying, and a run's speed is known only
once it runs. So the first MEASURE_EPOCHS epochs run with the schedule still open. Epoch 1 is not
a fair sample: on CuPy it compiles every kernel (~37 s of the H100 run's 41 s epoch 1). Then,
before epoch MEASURE_EPOCHS + 1 starts, the run fixes its length once:

    epochs = MEASURE_EPOCHS + floor((budget - spent) / median wall of epochs 2..MEASURE_EPOCHS)

clamped to [MEASURE_EPOCHS, --epochs]. An epoch's wall is its training steps, validation and
checkpoints. Loading the data and the final test come on top of the budget. With a warmup of at
least MEASURE_EPOCHS epochs the learning rate so far did not depend on the length (the linear
warmup does not), so the run is the one a fixed --epochs of that length would have trained.
The choice is saved in the checkpoint, so --resume keeps it.
"""
import math
import statistics

MEASURE_EPOCHS = 3


def check_budget(minutes: float, epochs: int, warmup_epochs: float, res_schedule) -> None:
    """Refuse a budget this fitting cannot honour, naming the flag to change."""
    if not 0 < minutes < math.inf:
        raise ValueError(f"--time-budget takes minutes > 0, got {minutes}")
    if epochs <= MEASURE_EPOCHS:
        raise ValueError(f"--time-budget fits the run's length after epoch {MEASURE_EPOCHS}: "
                         f"give --epochs above {MEASURE_EPOCHS} (the most epochs), got {epochs}")
    if res_schedule:
        raise ValueError("--time-budget fits epochs of one image size, not a resolution "
                         "schedule: give --epochs N (the most epochs, all at full size)")
    if warmup_epochs < MEASURE_EPOCHS:
        raise ValueError(f"--time-budget fixes the run's length after epoch {MEASURE_EPOCHS}, "
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
            "ceiling": ceiling, "epochs": max(done, min(ceiling, fit))}


def describe(why: dict, warmup_epochs: float) -> str:
    """One line for the log: what was measured and what was chosen."""
    line = (f"time budget {why['budget_min']:g} min: {why['spent_s']:.0f} s spent, "
            f"{why['seconds_per_epoch']:.2f} s an epoch from now -> {why['epochs']} epochs")
    if why["fit"] > why["ceiling"]:
        line += (f" (the budget holds {why['fit']}; --epochs {why['ceiling']} caps it, give a "
                 f"larger --epochs to train longer)")
    if why["epochs"] <= warmup_epochs:
        line += (f"; warning: that ends within the {warmup_epochs:g}-epoch warmup, so the "
                 f"learning rate never decays (a larger budget or a shorter --warmup)")
    return line
