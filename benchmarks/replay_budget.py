"""What --time-budget decides on a run's measured epoch times, without training: the epochs' walls
of a log.jsonl are replayed through minivit.budget.decide, the function the training run calls
after each epoch. Past the log's end its epochs after the first are replayed again (a longer
run on the same machine); --factor F --from E makes epochs E on F times as long (a machine that
slows down or speeds up). A model of a run, not a measurement of one.

    python benchmarks/replay_budget.py benchmarks/logs/h100_full_seed0.jsonl --budget 18.5

The log in benchmarks/logs/ is the fifteenth session's 200-epoch `full` run on the H100
(BENCHMARKS.md); its records predate val_seconds and wall_seconds, so an epoch counts its
training steps alone unless --extra adds seconds to each (validation and checkpoints).
"""
import argparse
import itertools
import json

from minivit.budget import decide, epoch_wall


def walls(records, extra, factor, slow_from):
    """The replayed epochs' walls: the log's, then its epochs 2.. again and again."""
    base = [epoch_wall(r) + extra for r in records]
    for e, w in enumerate(itertools.chain(base[:1], itertools.cycle(base[1:])), start=1):
        yield w * (factor if e >= slow_from else 1.0)


def replay(records, budget_min, ceiling, warmup, extra=0.0, factor=1.0, slow_from=1,
           log=print):
    """Replay the decisions; returns (epochs trained, their seconds, the fit)."""
    history, fit = [], None
    for wall in walls(records, extra, factor, slow_from):
        if fit is not None and len(history) >= fit["epochs"]:
            break
        history.append({"wall_seconds": wall})
        fit, line = decide(fit, history, budget_min, ceiling, warmup)
        if line:
            log(line)
    return len(history), sum(r["wall_seconds"] for r in history), fit


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", help="a run's log.jsonl")
    p.add_argument("--budget", type=float, required=True, help="minutes (--time-budget)")
    p.add_argument("--epochs", type=int, default=2000, help="the most epochs (--epochs)")
    p.add_argument("--warmup", type=float, default=10, help="warmup epochs (for the warning)")
    p.add_argument("--extra", type=float, default=0.0, help="seconds added to each epoch")
    p.add_argument("--factor", type=float, default=1.0, help="epochs from --from take F times")
    p.add_argument("--from", dest="slow_from", type=int, default=1,
                   help="the first epoch --factor scales (1)")
    args = p.parse_args()
    with open(args.log) as f:
        records = [json.loads(line) for line in f if line.strip()]
    scale = (args.extra, args.factor, args.slow_from)
    n, seconds, fit = replay(records, args.budget, args.epochs, args.warmup, *scale)
    first = min(fit["fit"], args.epochs)
    alone = sum(itertools.islice(walls(records, *scale), first))
    print(f"{n} epochs in {seconds / 60:.2f} min of {args.budget:g} with the checks; the first "
          f"fit alone: {first} epochs in {alone / 60:.2f} min")


if __name__ == "__main__":
    main()
