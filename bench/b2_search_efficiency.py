"""B2, search efficiency: how many training epochs the service's default search (TPE with the
median pruner) spends to come within 0.5 percentage points of the best validation accuracy of
an exhaustive grid, divided by the epochs of that grid; over several sampler seeds, with TPE
without pruning and random search reported the same way.

The grid is the service's own grid sampler over step_decay's three searched parameters, with
`grid_points` values each over the search space every variant uses (lr0 1e-3..1 log, drop
0.1..0.9, epochs_drop 1..4 epochs): 4 points -> 64 configurations on digits with the mlp, SGD,
batch size 64, 8 epochs. Every search runs in this process
with the worker's sampler and pruner construction (worker/search.py: a sampler per trial slot
seeded seed + slot, TPE multivariate with constant liar, MedianPruner(2 startup trials, 1
warm-up epoch)) and the library's training loop, one trial after another, as one worker would,
so the count is exactly the epochs a user pays for. A search stops when it reaches the target,
or gives up after twice as many trials as the grid has; a search that gave up counts as not
reaching it (an infinite ratio) in the median, never as its (small) spend.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.common import command_line, write_result

FAMILY = "step_decay"
NOT_REACHED = None  # JSON has no infinity: a median or bound that is "never" is null
SPACE = {FAMILY: {"lr0": {"low": 1e-3, "high": 1.0, "log": True}}}  # drop, epochs_drop: defaults


def _finite(value: float) -> float | None:
    return NOT_REACHED if math.isinf(value) else value


def spec(sampler: str, pruner: str, seed: int, epochs: int, grid_points: int) -> dict[str, Any]:
    """A study spec as the API stores it (what the worker's Optuna setup reads)."""
    from lrsearch.spec import RunSpec

    run = RunSpec.builtin("digits", "mlp", seed=0, objective="val_accuracy")
    return {"run": run.stored(), "families": [FAMILY], "search_space": SPACE,
            "epochs": epochs, "pruner": {"name": pruner},
            "sampler": {"name": sampler, "seed": seed, "grid_points": grid_points}}


def train_trial(ot: Any, params: dict[str, Any], epochs: int, batch_size: int,
                prune: bool) -> tuple[float | None, int]:
    """Train one configuration, reporting each epoch to Optuna. Returns (final val_accuracy or
    None when pruned, epochs run)."""
    from lrsearch.spec import RunSpec
    from lrsearch.training import TrainConfig, train

    ran, stop = 0, False

    def on_epoch(record: Any) -> None:
        nonlocal ran, stop
        ran += 1
        value = record.metrics.get("val_accuracy")
        if ot is not None and value is not None:
            ot.report(value, record.epoch)
            stop = prune and ot.should_prune()

    from lrsearch.errors import TrainingCancelled

    try:
        spec = RunSpec.builtin("digits", "mlp", optimizer="sgd", batch_size=batch_size, seed=0)
        result = train(TrainConfig(spec, schedule=FAMILY, schedule_params=params,
                                   epochs=epochs),
                       on_epoch_end=on_epoch, should_stop=lambda: stop)
    except TrainingCancelled:
        return None, ran
    return result.epochs[-1].metrics.get("val_accuracy"), ran


def grid(epochs: int, batch_size: int, grid_points: int) -> list[dict[str, Any]]:
    import itertools

    from worker.search import grid_space

    space = grid_space(spec("grid", "none", 0, epochs, grid_points))
    names = sorted(space)
    rows = []
    for values in itertools.product(*(space[n] for n in names)):
        params = dict(zip(names, values, strict=True))
        value, ran = train_trial(None, params, epochs, batch_size, prune=False)
        rows.append({"params": params, "value": value, "epochs": ran})
    return rows


def search(sampler: str, pruner: str, seed: int, epochs: int, batch_size: int,
           grid_points: int, target: float, max_trials: int) -> dict[str, Any]:
    """One search, slot after slot, until a complete trial reaches `target`."""
    import optuna

    from lrsearch.schedules.search import suggest
    from worker import search as worker_search

    s = spec(sampler, pruner, seed, epochs, grid_points)
    storage = optuna.storages.InMemoryStorage()
    spent, best = 0, None
    for slot in range(max_trials):
        study = worker_search.load(s, "b2", storage, slot)  # type: ignore[arg-type]
        ot = study.ask()
        params = suggest(ot, FAMILY, SPACE[FAMILY], epochs=epochs)
        value, ran = train_trial(ot, params, epochs, batch_size, prune=pruner != "none")
        spent += ran
        if value is None:
            study.tell(ot, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(ot, value)
        best = value if best is None else max(best, value)
        if value >= target:
            return {"reached": True, "trials": slot + 1, "epochs": spent, "best": best}
    return {"reached": False, "trials": max_trials, "epochs": spent, "best": best}


def main(smoke: bool = False, seeds: int = 5) -> dict[str, Any]:
    epochs, batch_size, grid_points = (2, 256, 2) if smoke else (8, 64, 4)
    seeds = 2 if smoke else seeds
    rows = grid(epochs, batch_size, grid_points)
    grid_epochs = sum(r["epochs"] for r in rows)
    grid_best = max(r["value"] for r in rows if r["value"] is not None)
    target = grid_best - 0.005
    print(f"B2 grid: {len(rows)} configurations, {grid_epochs} epochs, best val_accuracy "
          f"{grid_best:.4f}; target {target:.4f}")
    variants = {"tpe+median (default)": ("tpe", "median"), "tpe, no pruning": ("tpe", "none"),
                "random+median": ("random", "median")}
    figures = []
    for label, (sampler, pruner) in variants.items():
        runs = [search(sampler, pruner, seed, epochs, batch_size, grid_points, target,
                       max_trials=2 * len(rows)) for seed in range(seeds)]
        ratios = [r["epochs"] / grid_epochs if r["reached"] else math.inf for r in runs]
        median = statistics.median(ratios)
        figure = {"name": f"B2 search efficiency: {label}",
                  "ratio": "epochs to reach the grid's best - 0.5 pp / grid epochs",
                  "repeats": seeds, "median": _finite(median), "min": _finite(min(ratios)),
                  "max": _finite(max(ratios)), "reached": sum(r["reached"] for r in runs),
                  "runs": runs, "target": "<= 0.5" if label.endswith("(default)") else None}
        if seeds >= 4:
            q = statistics.quantiles(ratios, n=4)
            figure["iqr"] = [_finite(q[0]), _finite(q[2])]
        figures.append(figure)
        shown = ", ".join(f"{r['epochs']}" if r["reached"] else f"not reached ({r['epochs']})"
                          for r in runs)
        print(f"{figure['name']}: {median:.3f} median over {seeds} seeds (range "
              f"{min(ratios):.3f}-{max(ratios):.3f}); reached {figure['reached']}/{seeds}; "
              f"epochs {shown}")
    write_result("b2_search_efficiency", {
        "grid": {"configurations": len(rows), "epochs": grid_epochs, "best": grid_best,
                 "target": target, "rows": rows},
        "config": {"dataset": "digits", "model": "mlp", "optimizer": "sgd", "family": FAMILY,
                   "epochs": epochs, "batch_size": batch_size, "grid_points": grid_points},
        "figures": figures}, smoke)
    return {"figures": figures}


if __name__ == "__main__":
    command_line(main, __doc__, repeats=None, seeds=(int, 5, "sampler seeds"))
