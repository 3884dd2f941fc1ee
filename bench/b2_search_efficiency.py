"""B2, search efficiency: how many training epochs a search spends to come within 0.5
percentage points of the best validation accuracy of an exhaustive grid, divided by the epochs
of that grid, over several search seeds; the service's default search (TPE with the median
pruner) and its variants next to their peers (KerasTuner and plain Optuna), all in one run and
judged by the same rules; and the quality of what each search returns after a fixed budget of
epochs, retrained with seeds no search used.

What every arm trains (bench/peers.py Setup): digits with the built-in mlp (hidden [64]),
plain SGD, batch size 64, 8 epochs, the step_decay family with its Keras schedule as the
library builds it (lrsearch.schedules.keras), over the same space: lr0 1e-3..1 (log), drop
0.1..0.9, epochs_drop the integers 1..4 (the family's default ranges at 8 epochs). The
validation split is the run spec's (seed 0) for every trial of every arm and of the grid.

Seeds: a trial trains with its own seed (initial weights and data order): trial `i` (0-based,
in the order its search started it) of the search with seed `s` uses 10000 * s + i
(peers.trial_seed); grid row i (rows in the order of itertools.product over the sorted
parameter names) uses 500000 + i; retraining a pick uses 1000000 + k, k = 0..4. The split does
not depend on these: RunSpec.seed (0) fixes it, TrainConfig.seed (or the peers' trainer, which
assembles the same pieces as lrsearch.training.train) seeds initialisation and data order.

The grid is the service's grid over the three parameters (worker.search.grid_space, what its
grid sampler walks), `grid_points` values each (4 -> 64 configurations, 512 epochs). Target:
the grid's best configuration (by its single run) retrained with the 5 fresh seeds, their mean
final val_accuracy - 0.005 (with a seed per trial the best single run of 64 is the luckiest
draw, which a search would chase for its luck rather than its configuration).

The arms:
- "tpe+median (default)", "tpe, no pruning", "random+median", "tpe+hyperband (ours)": the
  worker's sampler and pruner construction (worker/search.py: a sampler per trial slot seeded
  seed + slot, TPE multivariate and grouped with constant liar, MedianPruner(2 startup trials,
  1 warm-up epoch), HyperbandPruner(min_resource 1, max_resource 8, reduction factor 3)) and
  the library's training loop, one trial after another as one worker would, each epoch
  reported with its 0-based index as the worker does;
- "KerasTuner Hyperband": keras_tuner.Hyperband(max_epochs 8, factor 3, iterations until
  stopped), seed = search seed; a configuration promoted to a later rung is rebuilt, loads
  KerasTuner's checkpoint (its best epoch so far) and trains on from `initial_epoch` with the
  optimizer's step counter set to initial_epoch * steps per epoch, so the schedule continues
  where the full one would be, on the batches that configuration's seed would give then;
- "KerasTuner BayesianOptimization", "KerasTuner RandomSearch": KerasTuner's defaults (9
  random initial points for the Bayesian one), every trial 8 epochs, seed = search seed;
- "Optuna TPE+Hyperband": plain Optuna without service code: TPESampler(seed) with its
  defaults, HyperbandPruner(min_resource 1, max_resource 8, reduction factor 3), its own
  objective (keras fit, val_accuracy reported after each epoch at its 0-based index, as
  Optuna's Keras pruning callback does).
KerasTuner searches use a fresh temporary directory with overwrite=True; all hyperparameters
are declared with our ranges (peers.declare).

Rules, the same for every arm (bench/peers.py Ledger): epochs are counted as trained (a
callback's on_epoch_end; a resumed Hyperband trial counts only the epochs it ran). The target
is reached at the end of the first trial that trained the full 8-epoch schedule, was kept by
its search (not pruned) and whose final val_accuracy is >= target; the figure is the epochs
spent up to then / the grid's epochs. A search goes on (so that every budget below has its
pick) until it has reached the target and spent 128 epochs, or gives up once it has spent
twice the grid's epochs without reaching it; both are checked between trials. A search that
gave up counts as not reaching the target (an infinite ratio) in the median, never as its
(small) spend.

Quality: for each arm, search seed and budget B in (64, 128) epochs, the pick is the best
fully trained configuration (by its final val_accuracy in the search) among the trials that
had ended when B epochs were spent; it is retrained for 8 epochs with 5 fresh seeds, each
(configuration, seed) once. Reported per arm and budget: the mean over search seeds of each
pick's mean, the standard deviation of those means, and the std, min and max of all the
retrained values.

`--problem generated` runs the same comparison on B8's schedule-sensitive problem (the
generated 10-class .npz of bench/b8_schedule_matters.py, its fixed 3200/800 split, 15 epochs,
lr0 0.01..1 as B8 searches, budgets 120 and 240 epochs: about 8 and 16 full trials, as 64 and
128 are at 8 epochs), written as b2b_generated_problem.json
(`python -m bench.b2b_generated_problem`).

`--smoke`: every arm on 2 seeds, 2 epochs, batch 256, 2 grid points, budgets (4, 8) epochs, 2
retraining seeds. `--arms` runs some arms (keys: ARMS).
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import command_line, write_result
from bench.peers import (
    GRID_SEED,
    RETRAIN_SEED,
    KerasTrainer,
    Ledger,
    Setup,
    keras_tuner_search,
    optuna_hyperband_search,
    params_key,
    trial_seed,
)

FAMILY = "step_decay"
NOT_REACHED = None  # JSON has no infinity: a median or bound that is "never" is null
BUDGETS, SMOKE_BUDGETS = (64, 128), (4, 8)


@dataclass(frozen=True)
class Problem:
    """What B2 searches on: `digits` (the built-in dataset, 8 epochs, lr0 1e-3..1) or
    `generated` (B8's schedule-sensitive problem: bench.b8_schedule_matters.write_problem's
    .npz, 15 epochs, lr0 over B8's 0.01..1), with budgets of about 8 and 16 full trials."""

    name: str
    epochs: int
    lr0: tuple[float, float]
    budgets: tuple[int, int]
    result: str  # the JSON file under bench/results/
    label: str  # how its figures are named


PROBLEMS = {
    "digits": Problem("digits", 8, (1e-3, 1.0), BUDGETS, "b2_search_efficiency",
                      "B2 search efficiency"),
    "generated": Problem("generated", 15, (0.01, 1.0), (120, 240), "b2b_generated_problem",
                         "B2 on B8's problem"),
}
RETRAINS, SMOKE_RETRAINS = 5, 2


@dataclass(frozen=True)
class Arm:
    """One search under test: `kind` "ours" (worker/search.py with `sampler` and `pruner`),
    "keras_tuner" (peers.keras_tuner_search with `tuner`) or "optuna" (plain Optuna)."""

    label: str
    kind: str
    sampler: str = ""
    pruner: str = ""
    tuner: str = ""
    default: bool = False


ARMS = {
    "default": Arm("tpe+median (default)", "ours", "tpe", "median", default=True),
    "tpe": Arm("tpe, no pruning", "ours", "tpe", "none"),
    "random": Arm("random+median", "ours", "random", "median"),
    "hyperband": Arm("tpe+hyperband (ours)", "ours", "tpe", "hyperband"),
    "kt-hyperband": Arm("KerasTuner Hyperband", "keras_tuner", tuner="hyperband"),
    "kt-bayesian": Arm("KerasTuner BayesianOptimization", "keras_tuner", tuner="bayesian"),
    "kt-random": Arm("KerasTuner RandomSearch", "keras_tuner", tuner="random"),
    "optuna-hyperband": Arm("Optuna TPE+Hyperband", "optuna"),
}


def _finite(value: float) -> float | None:
    return NOT_REACHED if math.isinf(value) else value


def spec(sampler: str, pruner: str, seed: int, setup: Setup, grid_points: int
         ) -> dict[str, Any]:
    """A study spec as the API stores it (what the worker's Optuna setup reads)."""
    return {"run": setup.run_spec().stored(), "families": [FAMILY],
            "search_space": {FAMILY: dict(setup.space)},
            "epochs": setup.epochs, "pruner": {"name": pruner},
            "sampler": {"name": sampler, "seed": seed, "grid_points": grid_points}}


def train_trial(ot: Any, params: dict[str, Any], setup: Setup, seed: int,
                prune: bool) -> tuple[float | None, int, str]:
    """Train one configuration with the library's loop and training seed `seed`, reporting
    each epoch to Optuna (when `ot` is given) as the worker does. Returns (final val_accuracy,
    or None when pruned or diverged, epochs run, "complete" | "pruned" | "failed"). The Keras
    session is cleared first, as KerasTuner and the peers' trainer do (it does not change the
    result: the seed decides)."""
    import keras

    from lrsearch.errors import TrainingCancelled, TrainingDiverged
    from lrsearch.training import TrainConfig, train

    ran, stop = 0, False

    def on_epoch(record: Any) -> None:
        nonlocal ran, stop
        ran += 1
        value = record.metrics.get("val_accuracy")
        if ot is not None and value is not None:
            ot.report(value, record.epoch)
            stop = prune and ot.should_prune()

    keras.backend.clear_session()
    try:
        result = train(TrainConfig(setup.run_spec(), schedule=FAMILY, schedule_params=params,
                                   epochs=setup.epochs, seed=seed),
                       on_epoch_end=on_epoch, should_stop=lambda: stop)
    except TrainingCancelled:
        return None, ran, "pruned"
    except TrainingDiverged:
        return None, ran + 1, "failed"  # the diverged epoch ran; the hook did not see it
    value = result.epochs[-1].metrics.get("val_accuracy")
    return value, ran, "complete" if value is not None else "failed"


def grid(setup: Setup, grid_points: int) -> list[dict[str, Any]]:
    """Every grid configuration trained once, row i with seed GRID_SEED + i."""
    import itertools

    from worker.search import grid_space

    space = grid_space(spec("grid", "none", 0, setup, grid_points))
    names = sorted(space)
    rows = []
    for i, values in enumerate(itertools.product(*(space[n] for n in names))):
        params = dict(zip(names, values, strict=True))
        value, ran, _ = train_trial(None, params, setup, GRID_SEED + i, prune=False)
        rows.append({"params": params, "seed": GRID_SEED + i, "value": value, "epochs": ran})
    return rows


def our_search(arm: Arm, setup: Setup, grid_points: int, search_seed: int,
               ledger: Ledger) -> None:
    """Our search, slot after slot (a worker's study load per slot), until the ledger is
    done."""
    import optuna

    from lrsearch.schedules.search import suggest
    from worker import search as worker_search

    s = spec(arm.sampler, arm.pruner, search_seed, setup, grid_points)
    storage = optuna.storages.InMemoryStorage()
    slot = 0
    while not ledger.done():
        study = worker_search.load(s, "b2", storage, slot)  # type: ignore[arg-type]
        ot = study.ask()
        params = suggest(ot, FAMILY, dict(setup.space), epochs=setup.epochs)
        seed = trial_seed(search_seed, ot.number)
        value, ran, state = train_trial(ot, params, setup, seed, prune=arm.pruner != "none")
        group = None
        if isinstance(study.pruner, optuna.pruners.HyperbandPruner):
            # Optuna's own bracket of the trial (what its TPE and pruner condition on)
            frozen = storage.get_trial(ot._trial_id)
            group = f"bracket {study.pruner._get_bracket_id(study, frozen)}"
        if state == "complete":
            study.tell(ot, value)
        else:  # as the worker tells them: pruned, or failed (a diverged run)
            study.tell(ot, state=optuna.trial.TrialState.PRUNED if state == "pruned"
                       else optuna.trial.TrialState.FAIL)
        ledger.add(params, seed, ran, value, full=value is not None and ran == setup.epochs,
                   group=group)
        slot += 1


def run_arm(arm: Arm, setup: Setup, trainer: KerasTrainer, grid_points: int,
            search_seed: int, ledger: Ledger) -> None:
    if arm.kind == "ours":
        our_search(arm, setup, grid_points, search_seed, ledger)
    elif arm.kind == "keras_tuner":
        keras_tuner_search(arm.tuner, setup, trainer, search_seed, ledger)
    elif arm.kind == "optuna":
        optuna_hyperband_search(setup, trainer, search_seed, ledger)
    else:
        raise ValueError(f"unknown arm kind {arm.kind!r}")


def figure(arm: Arm, runs: list[dict[str, Any]], grid_epochs: int,
           label: str = "B2 search efficiency") -> dict[str, Any]:
    seeds = len(runs)
    ratios = [r["epochs"] / grid_epochs if r["reached"] else math.inf for r in runs]
    out = {"name": f"{label}: {arm.label}",
           "ratio": "epochs to reach the grid's best - 0.5 pp / grid epochs",
           "repeats": seeds, "median": _finite(statistics.median(ratios)),
           "min": _finite(min(ratios)), "max": _finite(max(ratios)),
           "reached": sum(r["reached"] for r in runs), "runs": runs,
           "target": "<= 0.5" if arm.default else None}
    if seeds >= 4:
        q = statistics.quantiles(ratios, n=4)
        out["iqr"] = [_finite(q[0]), _finite(q[2])]
    return out


def _stats(values: list[float]) -> dict[str, float | None]:
    return {"std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values) if values else None, "max": max(values) if values else None}


def quality(runs: dict[str, list[dict[str, Any]]], setup: Setup, budgets: tuple[int, ...],
            retrains: int,
            train: Callable[[dict[str, Any], int], float | None]) -> dict[str, Any]:
    """Each run's pick per budget retrained with `retrains` fresh seeds through `train(params,
    seed)` (each distinct (configuration, seed) once), summarised per arm and budget."""
    seeds = [RETRAIN_SEED + k for k in range(retrains)]
    cache: dict[tuple[str, int], float | None] = {}

    def retrained(params: dict[str, Any], seed: int) -> float | None:
        key = (params_key(params), seed)
        if key not in cache:
            cache[key] = train(params, seed)
        return cache[key]

    arms: dict[str, list[dict[str, Any]]] = {}
    for label, arm_runs in runs.items():
        rows = []
        for budget in budgets:
            picks: list[dict[str, Any]] = []
            for search_seed, run in enumerate(arm_runs):
                pick = run["picks"][str(budget)]
                if pick is None:
                    picks.append({"search_seed": search_seed, "params": None})
                    continue
                values = [retrained(pick["params"], s) for s in seeds]
                finite = [v for v in values if v is not None]
                picks.append({"search_seed": search_seed, "params": pick["params"],
                              "search_value": pick["value"], "ended_at": pick["ended_at"],
                              "retrained": values,
                              "mean": statistics.fmean(finite) if finite else None})
            means = [p["mean"] for p in picks if p.get("mean") is not None]
            every = [v for p in picks for v in p.get("retrained", []) if v is not None]
            rows.append({"budget": budget,
                         "mean": statistics.fmean(means) if means else None,
                         "std_of_means": statistics.stdev(means) if len(means) > 1 else None,
                         **_stats(every), "configs": len(means),
                         "missing": len(picks) - len(means), "picks": picks})
        arms[label] = rows
    return {"budgets": list(budgets), "retrain_seeds": seeds, "epochs": setup.epochs,
            "trainings": len(cache), "arms": arms}


def _where(runs: list[dict[str, Any]]) -> str:
    """The epochs' destinations summed over a figure's runs (up to each run's target)."""
    total: dict[str, int] = {}
    for r in runs:
        for length, row in r["profile"]["by_length"].items():
            total[length] = total.get(length, 0) + row["epochs"]
    return ", ".join(f"{v} in {k}-epoch trials" for k, v in total.items())


def setup_for(problem: Problem, smoke: bool, folder: Path) -> Setup:
    """The Setup every arm of `problem` trains (the generated problem's file in `folder`)."""
    epochs, batch_size = (2, 256) if smoke else (problem.epochs, 64)
    space = {"lr0": {"low": problem.lr0[0], "high": problem.lr0[1], "log": True}}
    if problem.name == "digits":
        return Setup(FAMILY, space, epochs, batch_size)
    from bench.b8_schedule_matters import DATASET, write_problem

    path = write_problem(folder)
    return Setup(FAMILY, space, epochs, batch_size, dataset=DATASET, dataset_file=str(path))


def main(smoke: bool = False, seeds: int = 5, arms: str = "", problem: str = "digits"
         ) -> dict[str, Any]:
    if problem not in PROBLEMS:
        raise ValueError(f"--problem {problem!r}: one of {', '.join(PROBLEMS)}")
    chosen_problem = PROBLEMS[problem]
    with tempfile.TemporaryDirectory(prefix="b2-") as folder:
        return _main(chosen_problem, smoke, seeds, arms, Path(folder))


def _main(problem: Problem, smoke: bool, seeds: int, arms: str, folder: Path
          ) -> dict[str, Any]:
    grid_points = 2 if smoke else 4
    seeds = 2 if smoke else seeds
    budgets = SMOKE_BUDGETS if smoke else problem.budgets
    retrains = SMOKE_RETRAINS if smoke else RETRAINS
    chosen = [ARMS[a.strip()] for a in arms.split(",") if a.strip()] or list(ARMS.values())
    setup = setup_for(problem, smoke, folder)
    epochs, batch_size = setup.epochs, setup.batch_size
    rows = grid(setup, grid_points)
    grid_epochs = sum(r["epochs"] for r in rows)
    grid_best = max(r["value"] for r in rows if r["value"] is not None)
    # With a seed per trial the grid's best single run is the luckiest of 64 draws; the
    # target is its configuration's mean over the fresh retraining seeds, less 0.5 pp.
    top = max((r for r in rows if r["value"] is not None), key=lambda r: r["value"])
    top_runs = [train_trial(None, top["params"], setup, RETRAIN_SEED + k, prune=False)[0]
                for k in range(retrains)]
    top_mean = statistics.fmean(v for v in top_runs if v is not None)
    target = top_mean - 0.005
    cap = 2 * grid_epochs
    if cap < max(budgets):
        raise ValueError(f"the give-up cap ({cap} epochs) is under the largest budget")
    print(f"B2 grid: {len(rows)} configurations, {grid_epochs} epochs, best val_accuracy "
          f"{grid_best:.4f} (its configuration retrained with {retrains} fresh seeds: mean "
          f"{top_mean:.4f}); target {target:.4f}; searches give up after {cap} epochs")
    trainer = KerasTrainer(setup)
    figures, runs_by_arm = [], {}
    for arm in chosen:
        runs = []
        for search_seed in range(seeds):
            ledger = Ledger(target, budgets, cap)
            run_arm(arm, setup, trainer, grid_points, search_seed, ledger)
            runs.append(ledger.run())
        runs_by_arm[arm.label] = runs
        fig = figure(arm, runs, grid_epochs, problem.label)
        figures.append(fig)
        shown = ", ".join(f"{r['epochs']} ({r['trials']} trials)" if r["reached"]
                          else f"not reached ({r['epochs']})" for r in runs)
        print(f"{fig['name']}: {_fmt(fig['median'])} median over {seeds} seeds (range "
              f"{_fmt(fig['min'])}-{_fmt(fig['max'])}); reached {fig['reached']}/{seeds}; "
              f"epochs {shown}; epochs to the target, all seeds: {_where(runs)}", flush=True)
    quality_result = quality(
        runs_by_arm, setup, budgets, retrains,
        lambda params, seed: train_trial(None, params, setup, seed, prune=False)[0])
    for label, qrows in quality_result["arms"].items():
        print(f"B2 retrained quality: {label}: " + "; ".join(
            f"{q['budget']} epochs {_fmt(q['mean'], 4, '-')} (std {_fmt(q['std'], 4, '-')}, "
            f"{_fmt(q['min'], 4, '-')}-{_fmt(q['max'], 4, '-')}, {q['configs']} picks)"
            for q in qrows))
    write_result(problem.result, {
        "grid": {"configurations": len(rows), "epochs": grid_epochs, "best": grid_best,
                 "best_retrained": top_runs, "target": target, "rows": rows},
        "config": {"problem": problem.name, "dataset": setup.dataset, "model": "mlp",
                   "optimizer": "sgd", "family": FAMILY,
                   "epochs": epochs, "batch_size": batch_size, "grid_points": grid_points,
                   "search_space": {k: _dimension(v) for k, v in setup.dimensions().items()},
                   "budgets": list(budgets), "give_up_after_epochs": cap,
                   "arms": [a.label for a in chosen],
                   "seeds": "trial i of search seed s: 10000*s + i; grid row i: 500000 + i; "
                            "retraining k: 1000000 + k; validation split: RunSpec seed 0"},
        "figures": figures, "quality": quality_result}, smoke)
    return {"figures": figures, "quality": quality_result}


def _fmt(value: float | None, digits: int = 3, missing: str = "never") -> str:
    return missing if value is None else f"{value:.{digits}f}"


def _dimension(d: Any) -> dict[str, Any]:
    """A resolved search dimension as JSON."""
    from dataclasses import asdict

    return {"kind": type(d).__name__.lower(), **asdict(d)}


if __name__ == "__main__":
    command_line(main, __doc__, repeats=None, seeds=(int, 5, "search seeds"),
                 arms=(str, "", f"comma-separated arms (default all): {', '.join(ARMS)}"),
                 problem=(str, "digits", f"what to search on: {', '.join(PROBLEMS)}"))
