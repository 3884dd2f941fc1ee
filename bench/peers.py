"""What B2's arms share (the training setup, the seed rule, the ledger that counts epochs and
judges every arm by the same rule), and the arms that are not the service's own search:
KerasTuner's Hyperband, BayesianOptimization and RandomSearch, and plain Optuna (TPE with
its HyperbandPruner, no service code).

Every arm trains the same thing: the run spec of `Setup` (a built-in model and dataset, the
validation split fixed by the spec's seed 0), the family's schedule built by the library's
Keras adapter (lrsearch.schedules.keras.learning_rate_for, what `lrsearch.training.train`
gives the optimizer), the same optimizer and batches. `KerasTrainer` assembles exactly the
pieces `train()` assembles, in the same order, so a configuration trained with a seed gives
the same curve here as through `train()`; the peers need the model itself (a KerasTuner
hypermodel builds it, then fits it), which `train()` does not hand out.

Seeds: trial `index` of search seed `s` trains with `trial_seed(s, index)` =
SEED_STRIDE * s + index (initial weights and data order; the split never moves). A
KerasTuner Hyperband trial that continues an earlier one keeps the seed of the trial it
continues and skips the batches that trial already saw, so a configuration trained in rungs
sees the data an uninterrupted run with that seed would.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SEED_STRIDE = 10_000  # trials of one search, at most (a search gives up long before)
GRID_SEED = 500_000  # grid row i trains with GRID_SEED + i: no search trial uses these
RETRAIN_SEED = 1_000_000  # the k-th retraining of a search's pick: RETRAIN_SEED + k
OBJECTIVE = "val_accuracy"


def trial_seed(search_seed: int, index: int) -> int:
    """The training seed of trial `index` (0-based, in the order the search started its trials)
    of the search with `search_seed`."""
    if not 0 <= index < SEED_STRIDE:
        raise ValueError(f"trial index {index} is outside 0..{SEED_STRIDE - 1}")
    return SEED_STRIDE * search_seed + index


def params_key(params: Mapping[str, Any]) -> str:
    """A configuration as a hashable, printable key (retrained results are cached by it)."""
    return json.dumps(dict(params), sort_keys=True)


@dataclass(frozen=True)
class Setup:
    """What every arm trains: dataset, built-in model, optimizer, one schedule family with the
    search-space overrides every arm uses, epochs and batch size."""

    family: str
    space: Mapping[str, Any]
    epochs: int
    batch_size: int
    dataset: str = "digits"
    model: str = "mlp"
    optimizer: str = "sgd"
    dataset_file: str | None = None  # an .npz upload's path (its split is in the file)

    def run_spec(self) -> Any:
        """The RunSpec of every trial: seed 0, so the validation split is one for all."""
        from lrsearch.spec import RunSpec

        return RunSpec.builtin(self.dataset, self.model, optimizer=self.optimizer,
                               batch_size=self.batch_size, seed=0, objective=OBJECTIVE,
                               dataset_file=self.dataset_file)

    def dimensions(self) -> dict[str, Any]:
        """The family's resolved search space (lrsearch.schedules.search.space): what our
        search samples from, and what the peers declare."""
        from lrsearch.schedules.search import space

        return space(self.family, self.space, epochs=self.epochs)


class KerasTrainer:
    """Builds and fits one configuration of a Setup with the library's own pieces.

    `build(params, seed)` clears the Keras session, seeds everything with `seed` and returns
    the compiled model whose optimizer follows the family's Keras schedule. `fit(model, seed,
    epochs=, initial_epoch=)` trains epochs initial_epoch..epochs-1: the optimizer's step
    counter is set to initial_epoch * steps_per_epoch (the schedule goes on from the start of
    that epoch whatever a loaded checkpoint held) and the shuffled batches of `seed` are
    skipped up to there."""

    def __init__(self, setup: Setup) -> None:
        from lrsearch.training import open_input, steps_per_epoch

        self.setup = setup
        self.spec = setup.run_spec()
        self.data = open_input(self.spec, data_dir=None)
        self.spe = steps_per_epoch(self.data.train_examples, setup.batch_size)
        self.val_steps = steps_per_epoch(self.data.val_examples, setup.batch_size)

    def build(self, params: Mapping[str, Any], seed: int) -> Any:
        import keras

        from lrsearch import optimizers
        from lrsearch.models.resolve import compiled_model
        from lrsearch.schedules import validate
        from lrsearch.schedules.keras import learning_rate_for, momentum_schedule

        family, timeline = validate(self.setup.family, dict(params),
                                    steps_per_epoch=self.spe, epochs=self.setup.epochs)
        if family.adaptive:  # its callbacks are not wired here; B2's families are step ones
            raise ValueError(f"{family.name} is adaptive: not supported by the peers' trainer")
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        lr = learning_rate_for(family, timeline)
        optimizer = optimizers.build(self.spec.optimizer.name, self.spec.optimizer.params, lr,
                                     momentum_schedule(family, timeline))
        return compiled_model(self.spec, self.data.input_shape, self.data.head, optimizer)

    def fit(self, model: Any, seed: int, *, epochs: int, initial_epoch: int = 0,
            callbacks: Sequence[Any] = ()) -> Any:
        skip = initial_epoch * self.spe
        model.optimizer.iterations.assign(skip)
        batches = self.data.train(self.setup.batch_size, seed).skip(skip)
        return model.fit(batches, steps_per_epoch=self.spe,
                         validation_data=self.data.val(self.setup.batch_size),
                         validation_steps=self.val_steps, epochs=epochs,
                         initial_epoch=initial_epoch, verbose=0, shuffle=False,
                         callbacks=list(callbacks))


@dataclass(frozen=True)
class Trial:
    """One trial of a search as the ledger saw it: `epochs` it trained, `full` when it trained
    the whole schedule (to the last epoch) and its search kept it (not pruned), `value` its
    final val_accuracy when full, `spent` the search's epochs once it ended, `group` its
    Hyperband bracket (and rung) where the arm has them."""

    index: int
    params: dict[str, Any]
    seed: int
    epochs: int
    full: bool
    value: float | None
    spent: int
    group: str | None = None


@dataclass
class Ledger:
    """Counts one search's epochs and judges it: the target is reached at the end of the first
    fully trained trial whose final val_accuracy is >= target (its `epochs` is the spend up to
    then). A search goes on until it has reached the target AND spent max(budgets) epochs (so
    that every budget's pick exists), or gives up once it has spent `cap` epochs; both are
    checked between trials (a trial in progress finishes)."""

    target: float
    budgets: tuple[int, ...]
    cap: int
    trials: list[Trial] = field(default_factory=list)
    spent: int = 0
    reached_at: int | None = None  # index into trials
    started: float = field(default_factory=time.monotonic)
    seconds: float | None = None

    def add(self, params: Mapping[str, Any], seed: int, epochs: int, value: float | None,
            full: bool, group: str | None = None) -> Trial:
        self.spent += epochs
        trial = Trial(len(self.trials), dict(params), seed, epochs, full,
                      value if full else None, self.spent, group)
        self.trials.append(trial)
        if (self.reached_at is None and trial.value is not None
                and trial.value >= self.target):
            self.reached_at = trial.index
            self.seconds = time.monotonic() - self.started
        return trial

    def done(self) -> bool:
        return (self.reached_at is not None and self.spent >= max(self.budgets)) \
            or self.spent >= self.cap

    def best_within(self, budget: int) -> Trial | None:
        """The best fully trained trial that had ended when `budget` epochs were spent (what
        the search would have returned then), or None when there was none."""
        done = [t for t in self.trials if t.full and t.spent <= budget]
        return max(done, key=lambda t: (t.value, -t.index)) if done else None

    def run(self) -> dict[str, Any]:
        """The run as B2 reports it: reached, trials and epochs to the target (all of the
        search when it never reached it), the best value by then, where those epochs went
        (`profile`), the whole search's length, and each budget's pick."""
        upto = self.trials if self.reached_at is None else self.trials[:self.reached_at + 1]
        values = [t.value for t in upto if t.value is not None]
        picks: dict[str, Any] = {}
        for budget in self.budgets:
            best = self.best_within(budget)
            picks[str(budget)] = None if best is None else {
                "params": best.params, "value": best.value, "trial": best.index,
                "ended_at": best.spent}
        return {"reached": self.reached_at is not None, "trials": len(upto),
                "epochs": upto[-1].spent if upto else 0,
                "best": max(values) if values else None,
                "seconds": None if self.seconds is None else round(self.seconds, 1),
                "search_trials": len(self.trials), "search_epochs": self.spent,
                "profile": profile(upto), "picks": picks}


def profile(trials: Iterable[Trial]) -> dict[str, Any]:
    """Where a search's epochs went: trials started, distinct configurations, trials fully
    trained, epochs in full and in stopped trials, trials and epochs by how many epochs a trial
    trained (`by_length`) and, for Hyperband arms, by bracket/rung (`by_group`)."""
    trials = list(trials)
    by_length: dict[str, dict[str, int]] = {}
    by_group: dict[str, dict[str, int]] = {}
    for t in trials:
        for table, key in ((by_length, str(t.epochs)), (by_group, t.group)):
            if key is None:
                continue
            row = table.setdefault(key, {"trials": 0, "epochs": 0})
            row["trials"] += 1
            row["epochs"] += t.epochs
    out: dict[str, Any] = {
        "trials_started": len(trials),
        "configurations": len({params_key(t.params) for t in trials}),
        "trials_full": sum(t.full for t in trials),
        "epochs_full": sum(t.epochs for t in trials if t.full),
        "epochs_stopped": sum(t.epochs for t in trials if not t.full),
        "by_length": dict(sorted(by_length.items(), key=lambda kv: int(kv[0])))}
    if by_group:
        out["by_group"] = dict(sorted(by_group.items()))
    return out


def _epoch_callback(on_epoch: Any) -> Any:
    """A Keras callback calling `on_epoch(epoch, logs)` after every epoch it trains."""
    import keras

    class OnEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            on_epoch(epoch, dict(logs or {}))

    return OnEpoch()


def _final(logs: Mapping[str, Any]) -> float | None:
    value = logs.get(OBJECTIVE)
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# --- KerasTuner ------------------------------------------------------------------------------


def declare(hp: Any, dims: Mapping[str, Any]) -> dict[str, Any]:
    """Declare the family's searched parameters on a KerasTuner HyperParameters with our
    ranges (a log range sampled on a log scale, an integer range as hp.Int, a choice as
    hp.Choice); returns every parameter's value (fixed ones as they are)."""
    from lrsearch.schedules.search import Choice, Fixed

    params: dict[str, Any] = {}
    for name, d in dims.items():
        if isinstance(d, Fixed):
            params[name] = d.value
        elif isinstance(d, Choice):
            params[name] = hp.Choice(name, list(d.choices))
        elif d.integer:
            params[name] = hp.Int(name, int(d.low), int(d.high),
                                  sampling="log" if d.log else "linear")
        else:
            params[name] = hp.Float(name, d.low, d.high, sampling="log" if d.log else "linear")
    return params


def _values(values: Mapping[str, Any], dims: Mapping[str, Any]) -> dict[str, Any]:
    """A KerasTuner trial's configuration (its own tuner/* entries left out)."""
    from lrsearch.schedules.search import Fixed

    return {name: d.value if isinstance(d, Fixed) else values[name]
            for name, d in dims.items()}


KERAS_TUNERS = ("hyperband", "bayesian", "random")


def keras_tuner_search(kind: str, setup: Setup, trainer: KerasTrainer, search_seed: int,
                       ledger: Ledger) -> None:
    """One KerasTuner search (`kind` one of KERAS_TUNERS) with seed `search_seed`, run until
    `ledger.done()`: Hyperband(max_epochs=setup.epochs, factor=3, as many iterations as it
    takes), BayesianOptimization and RandomSearch with KerasTuner's defaults otherwise; the
    objective val_accuracy (max), a fresh temporary directory, overwrite=True."""
    import keras_tuner as kt

    dims = setup.dimensions()

    class HyperModel(kt.HyperModel):
        """Our configuration space, model and schedule; `seed` is set per trial by the tuner.
        `fit` trains what KerasTuner asks (Hyperband: epochs initial_epoch..epochs-1) and
        notes the epochs it really trained and the last epoch's val_accuracy."""

        def __init__(self) -> None:
            super().__init__(name="b2")
            self.seed = trial_seed(search_seed, 0)
            self.ran, self.last_epoch = 0, -1
            self.final: float | None = None

        def begin(self, seed: int) -> None:
            self.seed, self.ran, self.last_epoch, self.final = seed, 0, -1, None

        def build(self, hp: Any) -> Any:
            return trainer.build(declare(hp, dims), self.seed)

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            def on_epoch(epoch: int, logs: dict[str, Any]) -> None:
                self.ran += 1
                self.last_epoch, self.final = epoch, _final(logs)

            return trainer.fit(model, self.seed, epochs=int(kwargs["epochs"]),
                               initial_epoch=int(kwargs.get("initial_epoch", 0)),
                               callbacks=[*kwargs.get("callbacks", []),
                                          _epoch_callback(on_epoch)])

    class Recording(kt.Tuner):
        """Mixed in before a KerasTuner tuner: gives each trial its seed, records it in the
        ledger when it ends, and stops the search (no further trial) once the ledger is
        done, by capping the oracle's max_trials at the trials it has."""

        hypermodel: HyperModel
        started = 0
        seeds: dict[str, int]

        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
            continues = trial.hyperparameters.values.get("tuner/trial_id")
            seed = (self.seeds[continues] if continues is not None
                    else trial_seed(search_seed, self.started))
            self.started += 1
            self.seeds[trial.trial_id] = seed
            self.hypermodel.begin(seed)
            return super().run_trial(trial, *args, **kwargs)

        def _configure_tensorboard_dir(self, callbacks: Any, trial: Any,
                                       execution: int = 0) -> None:
            # KerasTuner imports tensorboard here (which it does not depend on, and which is
            # not installed) only to redirect TensorBoard callbacks; the search passes none.
            return None

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)
            values = trial.hyperparameters.values
            hm = self.hypermodel
            group = None
            if "tuner/bracket" in values:
                group = (f"bracket {values['tuner/bracket']}, round {values['tuner/round']}: "
                         f"epochs {values['tuner/initial_epoch']}-{values['tuner/epochs']}")
            full = hm.last_epoch == setup.epochs - 1 and hm.final is not None
            ledger.add(_values(values, dims), hm.seed, hm.ran, hm.final, full, group)
            if ledger.done():
                self.oracle.max_trials = len(self.oracle.trials)

    class Hyperband(Recording, kt.Hyperband):
        pass

    class Bayesian(Recording, kt.BayesianOptimization):
        pass

    class Random(Recording, kt.RandomSearch):
        pass

    objective = kt.Objective(OBJECTIVE, direction="max")
    with tempfile.TemporaryDirectory(prefix="b2-keras-tuner-") as folder:
        common: dict[str, Any] = {"objective": objective, "seed": search_seed,
                                  "directory": folder, "project_name": kind,
                                  "overwrite": True}
        tuner: Any
        if kind == "hyperband":
            tuner = Hyperband(HyperModel(), max_epochs=setup.epochs, factor=3,
                              hyperband_iterations=ledger.cap, **common)
        elif kind == "bayesian":
            # max_trials is never what stops it: every trial trains an epoch or more
            tuner = Bayesian(HyperModel(), max_trials=ledger.cap, **common)
        elif kind == "random":
            tuner = Random(HyperModel(), max_trials=ledger.cap, **common)
        else:
            raise ValueError(f"unknown KerasTuner arm {kind!r}; one of {KERAS_TUNERS}")
        tuner.seeds = {}
        with warnings.catch_warnings():
            # scikit-learn's Gaussian process (the Bayesian oracle) warns when a length scale
            # hits its bound: KerasTuner's choice of kernel, not something to act on here
            warnings.filterwarnings("ignore", module="sklearn")
            tuner.search(epochs=setup.epochs, verbose=0)
        failed = [t for t in tuner.oracle.trials.values()
                  if t.status in ("FAILED", "INVALID")]
        if failed:  # a failed trial is a bug in this benchmark, not a result
            raise RuntimeError(f"KerasTuner {kind}: trial {failed[0].trial_id} failed:\n"
                               f"{failed[0].message}")


# --- plain Optuna ----------------------------------------------------------------------------


def optuna_hyperband_search(setup: Setup, trainer: KerasTrainer, search_seed: int,
                            ledger: Ledger) -> None:
    """Plain Optuna, as its documentation would have a Keras user write it: TPESampler(seed)
    with its defaults, HyperbandPruner(min_resource=1, max_resource=setup.epochs,
    reduction_factor=3), an objective that samples our ranges, builds and fits the model and
    reports val_accuracy after every epoch with the epoch index as the step (as Optuna's Keras
    pruning callback does), raising TrialPruned when told to; the study stops between trials
    once the ledger is done."""
    import optuna

    from lrsearch.schedules.search import Choice, Fixed

    dims = setup.dimensions()
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=setup.epochs,
                                            reduction_factor=3)
    study = optuna.create_study(study_name=f"b2-optuna-{search_seed}", direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=search_seed),
                                pruner=pruner)
    outcome: dict[str, Any] = {}

    def sample(trial: optuna.Trial) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, d in dims.items():
            if isinstance(d, Fixed):
                params[name] = d.value
            elif isinstance(d, Choice):
                params[name] = trial.suggest_categorical(name, list(d.choices))
            elif d.integer:
                params[name] = trial.suggest_int(name, int(d.low), int(d.high), log=d.log)
            else:
                params[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
        return params

    def objective(trial: optuna.Trial) -> float:
        params = sample(trial)
        seed = trial_seed(search_seed, trial.number)
        outcome.clear()
        outcome.update(params=params, seed=seed, ran=0, last_epoch=-1, final=None)

        def on_epoch(epoch: int, logs: dict[str, Any]) -> None:
            outcome["ran"] += 1
            outcome["last_epoch"], outcome["final"] = epoch, _final(logs)
            if outcome["final"] is not None:
                trial.report(outcome["final"], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        model = trainer.build(params, seed)
        trainer.fit(model, seed, epochs=setup.epochs, callbacks=[_epoch_callback(on_epoch)])
        # No finite val_accuracy (a diverged run): NaN, which Optuna records as a failed trial
        return math.nan if outcome["final"] is None else float(outcome["final"])

    def after(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        full = (frozen.state == optuna.trial.TrialState.COMPLETE
                and outcome["last_epoch"] == setup.epochs - 1)
        group = None
        bracket = getattr(pruner, "_get_bracket_id", None)  # Optuna's own assignment
        if bracket is not None and getattr(pruner, "_pruners", None):
            group = f"bracket {bracket(study, frozen)}"
        ledger.add(outcome["params"], outcome["seed"], outcome["ran"], outcome["final"], full,
                   group)
        if ledger.done():
            study.stop()

    study.optimize(objective, callbacks=[after], catch=())
