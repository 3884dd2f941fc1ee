"""B8, a problem where the schedule matters: how much the best tuned decaying schedule beats the
best tuned constant learning rate, measured against seed noise, and what the service's default
pruner (the median rule) does on such a problem, replayed offline on trials trained to the end.

The problem (chosen by the exploration below): a generated 10-class problem,
sklearn.datasets.make_classification(n_samples=4000, n_features=40, n_informative=20,
n_redundant=10, n_classes=10, n_clusters_per_class=2, flip_y=0.05, class_sep=1.0,
random_state=0), its first 3200 rows for training and the last 800 for validation (written as
an .npz with x_val/y_val, the upload format, read through the library's npz path; the split is
fixed by the file, whatever the seeds), the built-in mlp (hidden [64]), plain SGD (no
momentum), batch size 64, 15 epochs, objective val_accuracy.

Exploration (before this module; one training seed per configuration, then the best of each
arm retrained with 4 seeds, 15 epochs unless said; numbers are final val_accuracy, mean and
standard deviation over seeds, measured on 2 shared cores while another benchmark ran):
- digits, mlp, SGD, batch 64, 10 epochs: constant lr 0.52 0.960 (std 0.012); cosine peak 1.0
  0.974 (0.001), one_cycle max 1.0 0.976 (0.004), step_decay lr0 1.0 0.974 (0.003); paired
  gains +1.3..+1.5 pp with a std of 1.1..1.4 pp: real but not clearly above seed noise, and
  the schedules' best sat at the top of the LR range (1.0).
- digits, small_cnn, SGD, batch 64, 12 epochs: too noisy to tell (constant 0.774 std 0.061,
  one_cycle 0.836 std 0.049, cosine's best single seed 0.894 retrained to 0.573 std 0.328).
- digits with 30 % of the training labels replaced by another class (clean validation), mlp,
  15 epochs: constant at 0.07..0.37 (4 seeds each) 0.928..0.945 with stds 0.018..0.034;
  cosine peak 1.0 0.971 (0.002): a gain of about 2.6 pp, about one constant seed std (the
  tuning sweep's picks gave +3.8..+4.5 pp with a paired std of about 2 pp). 45 %
  noise: constant best 0.912 (0.009), cosine 0.937 (0.006). Batch 32, 30 %: constant 0.961
  (0.017), cosine 0.973 (0.004).
- the generated problem above with 20 classes: constant best 0.392 (0.016) at lr 0.1,
  cosine peak 0.5 0.459 (0.024), one_cycle 0.441 (0.020); gains +4.9..+6.5 pp.
- the generated problem above (10 classes): constant lr 0.05 0.622 (0.009), 0.1 0.636
  (0.011), 0.2 0.592 (0.016); cosine peak 0.25 0.700 (0.011), peak 0.5 0.681 (0.021): a
  gain of about 6 pp, about 6 constant seed stds. Chosen: the clearest gain with an accuracy
  far from both chance and the ceiling.

Part 1, the gain. The constant LR is tuned on a log grid of 8 values over [0.01, 1]; each of
cosine, one_cycle and step_decay by random search (Optuna's RandomSampler, seed = the family's
position in SCHEDULES) over 16 configurations of its default search ranges at 15 epochs
(lrsearch.schedules.search.suggest), its peak LR parameter's range set to the constant's [0.01,
1] log so that every arm searches the same LRs. One training seed per configuration. The best
configuration of each arm (by its single-seed final val_accuracy) is retrained with 5 fresh
seeds, the same seeds for every arm (paired). "The best schedule" is chosen before retraining:
the schedule configuration with the best tuning value over the three families, so the choice
does not inflate its retrained gain. The figure: per fresh seed, best schedule's val_accuracy /
best constant's (median, min, max over seeds); with it the paired gain (schedule - constant:
mean, std, 95 % t interval with scipy.stats.t) and the noise (the std over seeds of the
constant's retrained values); every family's paired gain is reported as well.

Part 2, the pruning replay. 48 configurations drawn across constant, cosine, one_cycle,
step_decay and exponential with the service's cross-family sampling
(lrsearch.schedules.search.suggest_any, default search ranges, Optuna RandomSampler seed 0),
each trained to the end without pruning, every epoch's val_accuracy recorded. The replay then
runs Optuna's MedianPruner(n_startup_trials=2, n_warmup_steps=1) (the service's default
before this benchmark) on an in-memory study: trials in the recorded order, each epoch's value
reported at step = its 0-based epoch index (worker/tasks/trial.py), should_prune asked after
each report; a pruned trial is told PRUNED, a diverged one FAIL, the others COMPLETE with
their final value. Since a random sampler's draws do not depend on the results, this is what a
sequential random search with the median pruner would have trained, epoch for epoch. The same
replay runs the family-aware variant that is now the service's default `median`
(worker.search.FamilyMedianPruner: the same median rule, comparing a trial only with the
completed trials of its own family). Reported per pruner: trials pruned
(by family), epochs trained / saved, how many of the final top 5 and top 10 (by the recorded
final value) it pruned, and the best final value among the trials it kept. Reported once:
Spearman's rank correlation (scipy.stats.spearmanr) of the value after epochs 1, 2, 3 and
half of the epochs (1-based) with the final value, over all trials that finished, within each
family, and among the better half (final value at or above the median).

Seeds: tuning configuration i (0-based; the constant grid first, then cosine, one_cycle,
step_decay, in that order) trains with TUNE_SEED + i; replay trial i with REPLAY_SEED + i;
the k-th retraining with RETRAIN_SEED + k (bench/peers.py, the one B2 uses). The validation
set is the file's, the same for every training.

Full size: 8 + 3 * 16 tuning trainings, 4 * 5 retrainings and 48 replay trainings, 124
trainings of 15 epochs, about 2 s each on 2 cores (no service process: the library's loop in
this process). `--smoke`: 4 epochs, batch 256, 3 constant LRs, 2 configurations per family,
2 retraining seeds, 6 replay trials (the same code on tiny sizes).
"""

from __future__ import annotations

import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Ratio, command_line, write_result
from bench.peers import RETRAIN_SEED
from bench.report import b8_lines

TUNE_SEED = 100_000  # tuning configuration i trains with TUNE_SEED + i
REPLAY_SEED = 200_000  # replay trial i trains with REPLAY_SEED + i
OBJECTIVE = "val_accuracy"
DATASET = "b8-classes10"
CONSTANT = "constant"
SCHEDULES = ("cosine", "one_cycle", "step_decay")  # part 1's decaying families
REPLAY_FAMILIES = ("constant", "cosine", "one_cycle", "step_decay", "exponential")
LR_PARAM = {"constant": "lr", "cosine": "peak_lr", "one_cycle": "max_lr", "step_decay": "lr0"}
LR_RANGE = (0.01, 1.0)  # the LRs every arm of part 1 searches (log)
EARLY_EPOCHS = (1, 2, 3)  # 1-based epochs whose value is correlated with the final one
TOP = (5, 10)
TRAIN_ROWS, VAL_ROWS = 3200, 800  # of the generated problem's 4000


@dataclass(frozen=True)
class Sizes:
    """How much each part trains."""

    epochs: int
    batch_size: int
    lr_points: int
    configs: int
    retrains: int
    trials: int


FULL = Sizes(epochs=15, batch_size=64, lr_points=8, configs=16, retrains=5, trials=48)
SMOKE = Sizes(epochs=4, batch_size=256, lr_points=3, configs=2, retrains=2, trials=6)


# --- the problem -----------------------------------------------------------------------------


def write_problem(folder: Path) -> Path:
    """The generated 10-class problem as an .npz upload (x_train, y_train, x_val, y_val) in
    `folder`; the same file for the same sklearn version (random_state=0)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=TRAIN_ROWS + VAL_ROWS, n_features=40,
                               n_informative=20, n_redundant=10, n_classes=10,
                               n_clusters_per_class=2, flip_y=0.05, class_sep=1.0,
                               random_state=0)
    x, y = x.astype(np.float32), y.astype(np.int64)  # make_classification shuffles the rows
    path = folder / f"{DATASET}.npz"
    np.savez(path, x_train=x[:TRAIN_ROWS], y_train=y[:TRAIN_ROWS], x_val=x[TRAIN_ROWS:],
             y_val=y[TRAIN_ROWS:])
    return path


def run_spec(path: Path, batch_size: int) -> Any:
    """Every training's RunSpec: the mlp on the generated problem with plain SGD."""
    from lrsearch.spec import RunSpec

    return RunSpec.builtin(DATASET, "mlp", optimizer="sgd", batch_size=batch_size, seed=0,
                           objective=OBJECTIVE, dataset_file=str(path))


@dataclass(frozen=True)
class Curve:
    """One training: its val_accuracy after each epoch it finished (None where not finite),
    the epochs it ran (a diverged one counts the epoch that diverged), and "complete" or
    "failed" (diverged, or no final value)."""

    values: list[float | None]
    epochs: int
    state: str

    @property
    def final(self) -> float | None:
        return self.values[-1] if self.state == "complete" else None


def train_curve(spec: Any, family: str, params: Mapping[str, Any], epochs: int,
                seed: int) -> Curve:
    """Train one configuration to the end with the library's loop and training seed `seed`."""
    import keras

    from lrsearch.errors import TrainingDiverged
    from lrsearch.training import TrainConfig, train

    values: list[float | None] = []

    def on_epoch(record: Any) -> None:
        values.append(record.metrics.get(OBJECTIVE))

    keras.backend.clear_session()  # as B2 does: memory stays flat, results do not change
    try:
        train(TrainConfig(spec, schedule=family, schedule_params=dict(params), epochs=epochs,
                          seed=seed), on_epoch_end=on_epoch)
    except TrainingDiverged:
        return Curve(values, len(values) + 1, "failed")  # the hook did not see that epoch
    ok = len(values) == epochs and values[-1] is not None
    return Curve(values, len(values), "complete" if ok else "failed")


# --- part 1: the gain --------------------------------------------------------------------------


def _lr_override(family: str) -> dict[str, Any]:
    return {LR_PARAM[family]: {"low": LR_RANGE[0], "high": LR_RANGE[1], "log": True}}


def tune(spec: Any, sizes: Sizes, spe: int) -> dict[str, list[dict[str, Any]]]:
    """Every tuning configuration of part 1, trained once: the constant's log grid, then each
    schedule family's random configurations; rows in training order with their seed."""
    import optuna

    from lrsearch.schedules.search import suggest

    plan: list[tuple[str, dict[str, Any]]] = [
        (CONSTANT, {"lr": float(lr)}) for lr in np.geomspace(*LR_RANGE, sizes.lr_points)]
    for position, family in enumerate(SCHEDULES):
        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.RandomSampler(seed=position))
        for _ in range(sizes.configs):
            trial = study.ask()
            plan.append((family, suggest(trial, family, _lr_override(family),
                                         epochs=sizes.epochs, steps_per_epoch=spe)))
            study.tell(trial, 0.0)  # the draws do not depend on results: any value will do
    rows: dict[str, list[dict[str, Any]]] = {}
    for i, (family, params) in enumerate(plan):
        curve = train_curve(spec, family, params, sizes.epochs, TUNE_SEED + i)
        rows.setdefault(family, []).append({"params": params, "seed": TUNE_SEED + i,
                                            "value": curve.final, "curve": curve.values})
    return rows


def _best(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The row with the best final value (the first of equals); a failed row never wins."""
    done = [r for r in rows if r["value"] is not None]
    if not done:
        raise RuntimeError("every tuning configuration of an arm failed")
    return max(done, key=lambda r: r["value"])


def paired_gain(schedule: Sequence[float | None], constant: Sequence[float | None]
                ) -> dict[str, Any]:
    """Schedule - constant, seed by seed (seeds where either failed are left out): the mean,
    its std over seeds, and the 95 % t interval of the mean (None with fewer than 2 pairs)."""
    from scipy import stats

    diffs = [s - c for s, c in zip(schedule, constant, strict=True)
             if s is not None and c is not None]
    out: dict[str, Any] = {"pairs": len(diffs), "differences": diffs,
                           "mean": statistics.fmean(diffs) if diffs else None,
                           "std": None, "ci95": None}
    if len(diffs) >= 2:
        std = statistics.stdev(diffs)
        half = float(stats.t.ppf(0.975, len(diffs) - 1)) * std / math.sqrt(len(diffs))
        out.update(std=std, ci95=[out["mean"] - half, out["mean"] + half])
    return out


def _spread(values: Sequence[float | None]) -> dict[str, Any]:
    finite = [v for v in values if v is not None]
    return {"retrained": list(values), "failed": len(values) - len(finite),
            "mean": statistics.fmean(finite) if finite else None,
            "std": statistics.stdev(finite) if len(finite) > 1 else None}


def gain(spec: Any, sizes: Sizes, spe: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Part 1: (the figure, the details)."""
    tuning = tune(spec, sizes, spe)
    seeds = [RETRAIN_SEED + k for k in range(sizes.retrains)]
    arms: dict[str, dict[str, Any]] = {}
    for family in (CONSTANT, *SCHEDULES):
        pick = _best(tuning[family])
        values = [train_curve(spec, family, pick["params"], sizes.epochs, s).final
                  for s in seeds]
        arms[family] = {"params": pick["params"], "tuning_value": pick["value"],
                        "tuning_seed": pick["seed"], **_spread(values)}
    best = max(SCHEDULES, key=lambda f: arms[f]["tuning_value"])  # chosen before retraining
    constant = arms[CONSTANT]["retrained"]
    gains = {f: paired_gain(arms[f]["retrained"], constant) for f in SCHEDULES}
    pairs = [(s, c) for s, c in zip(arms[best]["retrained"], constant, strict=True)
             if s is not None and c is not None]
    if not pairs:
        raise RuntimeError(f"every retraining of {best} or of the constant failed")
    ratio = Ratio(f"B8 schedule matters: best schedule ({best}) / best constant LR",
                  f"val_accuracy of the best tuned schedule ({best})",
                  "of the best tuned constant LR, same fresh seed", pairs)
    figure = {**ratio.summary(), "gain": gains[best], "noise_std": arms[CONSTANT]["std"],
              "best_schedule": best}
    details = {"tuning": tuning, "arms": arms, "retrain_seeds": seeds, "best_schedule": best,
               "gains": gains, "noise_std": arms[CONSTANT]["std"]}
    return figure, details


# --- part 2: the pruning replay --------------------------------------------------------------


def sample_trials(sizes: Sizes, spe: int) -> list[tuple[str, dict[str, Any]]]:
    """The replay's configurations: the service's cross-family draw with default ranges."""
    import optuna

    from lrsearch.schedules.search import suggest_any

    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    plan = []
    for _ in range(sizes.trials):
        trial = study.ask()
        plan.append(suggest_any(trial, REPLAY_FAMILIES, epochs=sizes.epochs,
                                steps_per_epoch=spe))
        study.tell(trial, 0.0)  # random draws do not depend on results
    return plan


def replay(trials: Sequence[dict[str, Any]], pruner: Any) -> dict[str, Any]:
    """The recorded `trials` told, in order, to a fresh in-memory study with `pruner`, as the
    worker would have reported them; what it would have pruned, trained and kept."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    from lrsearch.schedules.search import FAMILY_PARAM

    study = optuna.create_study(direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed=0),
                                storage=optuna.storages.InMemoryStorage())
    rows = []
    for t in trials:
        study.enqueue_trial({FAMILY_PARAM: t["family"]})
        ot = study.ask({FAMILY_PARAM: CategoricalDistribution(list(REPLAY_FAMILIES))})
        pruned_at = None
        for epoch, value in enumerate(t["curve"]):
            if value is None or not math.isfinite(value):
                continue  # the worker reports finite values only
            ot.report(value, epoch)
            if ot.should_prune():
                pruned_at = epoch
                break
        if pruned_at is not None:
            study.tell(ot, state=TrialState.PRUNED)
            rows.append({"index": t["index"], "state": "pruned", "epochs": pruned_at + 1,
                         "pruned_after_epoch": pruned_at + 1})
        elif t["state"] == "complete":
            study.tell(ot, t["final"])
            rows.append({"index": t["index"], "state": "complete", "epochs": t["epochs"]})
        else:
            study.tell(ot, state=TrialState.FAIL)
            rows.append({"index": t["index"], "state": "failed", "epochs": t["epochs"]})
    by_index = {r["index"]: r for r in rows}
    ranked = sorted((t for t in trials if t["final"] is not None),
                    key=lambda t: (-t["final"], t["index"]))
    top = {str(k): {"pruned": sum(by_index[t["index"]]["state"] == "pruned" for t in ranked[:k]),
                    "of": len(ranked[:k]),
                    "trials": [{"index": t["index"], "family": t["family"], "final": t["final"],
                                "pruned_after_epoch": by_index[t["index"]].get(
                                    "pruned_after_epoch")} for t in ranked[:k]]}
           for k in TOP}
    kept = [t["final"] for t in trials if by_index[t["index"]]["state"] == "complete"]
    full = sum(t["epochs"] for t in trials)
    trained = sum(r["epochs"] for r in rows)
    by_family: dict[str, dict[str, int]] = {}
    for t in trials:
        row = by_family.setdefault(t["family"], {"trials": 0, "pruned": 0})
        row["trials"] += 1
        row["pruned"] += by_index[t["index"]]["state"] == "pruned"
    return {"pruned": sum(r["state"] == "pruned" for r in rows), "trials": len(rows),
            "epochs_unpruned": full, "epochs_trained": trained, "epochs_saved": full - trained,
            "top": top, "best_kept": max(kept) if kept else None,
            "best_overall": ranked[0]["final"] if ranked else None,
            "by_family": by_family, "rows": rows}


def _spearman(early: Sequence[float], final: Sequence[float]) -> float | None:
    """Spearman's rho, None with fewer than 3 pairs or a constant side (undefined)."""
    from scipy import stats

    if len(final) < 3 or len(set(early)) < 2 or len(set(final)) < 2:
        return None
    rho = float(stats.spearmanr(early, final).statistic)
    return rho if math.isfinite(rho) else None


def correlations(trials: Sequence[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """Spearman's rho of the value after each of EARLY_EPOCHS and half the epochs (1-based)
    with the final value, over the finished trials: all, per family, the better half."""
    marks = sorted({e for e in EARLY_EPOCHS if e <= epochs} | {max(1, epochs // 2)})
    done = [t for t in trials
            if t["final"] is not None and all(t["curve"][e - 1] is not None for e in marks)]
    median = statistics.median(t["final"] for t in done) if done else math.inf
    groups: dict[str, list[dict[str, Any]]] = {"all": done}
    for family in REPLAY_FAMILIES:
        groups[family] = [t for t in done if t["family"] == family]
    groups["better half"] = [t for t in done if t["final"] >= median]
    return {"epochs": marks, "groups": {
        name: {"trials": len(group),
               "rho": {str(e): _spearman([t["curve"][e - 1] for t in group],
                                         [t["final"] for t in group]) for e in marks}}
        for name, group in groups.items()}}


def pruning(spec: Any, sizes: Sizes, spe: int) -> dict[str, Any]:
    """Part 2: train the cross-family draw to the end, then replay both pruners on it."""
    import optuna

    trials = []
    for i, (family, params) in enumerate(sample_trials(sizes, spe)):
        curve = train_curve(spec, family, params, sizes.epochs, REPLAY_SEED + i)
        trials.append({"index": i, "family": family, "params": params,
                       "seed": REPLAY_SEED + i, "curve": curve.values, "epochs": curve.epochs,
                       "state": curve.state, "final": curve.final})
    from worker.search import FamilyMedianPruner

    replays = {
        "median across families (Optuna's MedianPruner, the default before)": replay(
            trials, optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)),
        "median within the family (the default)": replay(trials, FamilyMedianPruner(2, 1))}
    return {"epochs": sizes.epochs, "trials": trials, "replays": replays,
            "correlations": correlations(trials, sizes.epochs)}


def main(smoke: bool = False) -> dict[str, Any]:
    """Both parts on the generated problem (written to a temporary folder, removed after),
    the summary printed (bench/report.py's B8 lines) and the result written."""
    import optuna

    from lrsearch.training import steps_per_epoch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as the worker: no line per study

    sizes = SMOKE if smoke else FULL
    folder = Path(tempfile.mkdtemp(prefix="lrsearch-b8-"))
    started = time.monotonic()
    try:
        spec = run_spec(write_problem(folder), sizes.batch_size)
        spe = steps_per_epoch(TRAIN_ROWS, sizes.batch_size)
        figure, details = gain(spec, sizes, spe)
        part1 = time.monotonic() - started
        prune = pruning(spec, sizes, spe)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = {"gain": round(part1, 1), "pruning": round(time.monotonic() - started - part1, 1)}
    payload = {"figures": [figure], "schedule_matters": details, "pruning": prune}
    print(f"{figure['name']}: {figure['median']:.3f} median over {figure['repeats']} paired "
          f"seeds (range {figure['min']:.3f}-{figure['max']:.3f})")
    print("\n".join(b8_lines(payload)))
    print(f"B8 wall time: {seconds['gain']} s (gain), {seconds['pruning']} s (pruning replay)")
    write_result("b8_schedule_matters", {
        "config": {"dataset": "make_classification(4000, 40 features, 20 informative, 10 "
                              "redundant, 10 classes, 2 clusters per class, flip_y 0.05, "
                              "class_sep 1.0, random_state 0): 3200 train / 800 validation",
                   "model": "mlp [64]", "optimizer": "sgd", "epochs": sizes.epochs,
                   "batch_size": sizes.batch_size, "lr_points": sizes.lr_points,
                   "lr_range": list(LR_RANGE), "configs_per_family": sizes.configs,
                   "retrains": sizes.retrains, "replay_trials": sizes.trials,
                   "schedules": list(SCHEDULES), "replay_families": list(REPLAY_FAMILIES),
                   "seeds": f"tuning configuration i: {TUNE_SEED} + i; replay trial i: "
                            f"{REPLAY_SEED} + i; retraining k: {RETRAIN_SEED} + k; validation: "
                            "the file's 800 rows"},
        **payload, "seconds": seconds}, smoke)
    return payload


if __name__ == "__main__":
    command_line(main, __doc__, repeats=None)
