"""Optuna samplers, pruners and trials for a study spec (as the API stored it)."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from lrsearch.registry import Registry
from lrsearch.schedules.search import FAMILY_PARAM, grid
from lrsearch.spec import RunSpec
from worker.errors import Unregistered

optuna.logging.set_verbosity(optuna.logging.WARNING)
LOST_REASON = "lrsearch_failure"
SLOT, ATTEMPT = "lrsearch_slot", "lrsearch_attempt"  # which claim asked for a trial


def grid_space(spec: dict[str, Any]) -> dict[str, list[Any]]:
    """Grid values per searched parameter of a single-family study (the API checked its size
    with the same function)."""
    family = spec["families"][0]
    return grid(family, spec["search_space"].get(family), epochs=spec["epochs"],
                points=spec["sampler"].get("grid_points", 5))


SamplerFactory = Callable[[dict[str, Any], int, int], optuna.samplers.BaseSampler]
"""A sampler for (study spec, base seed, slot)."""
PrunerFactory = Callable[[dict[str, Any]], optuna.pruners.BasePruner]
"""A pruner for a study spec."""

# The names the API accepts (service/studies/schemas.py SamplerSpec, PrunerSpec) are these; a
# test checks that they agree, since the API does not import the worker.
SAMPLERS: Registry[SamplerFactory] = Registry("sampler", error=Unregistered,
                                              field="sampler.name")
PRUNERS: Registry[PrunerFactory] = Registry("pruner", error=Unregistered, field="pruner.name")


@SAMPLERS.register("tpe")
def _tpe(spec: dict[str, Any], base: int, slot: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # `group` is marked experimental; it is what we want
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=base + slot, multivariate=True, group=True,
                                          constant_liar=True)


@SAMPLERS.register("random")
def _random(spec: dict[str, Any], base: int, slot: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=base + slot)


@SAMPLERS.register("grid")
def _grid(spec: dict[str, Any], base: int, slot: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GridSampler(grid_space(spec), seed=base)  # one grid order for all


@SAMPLERS.register("cmaes")
def _cmaes(spec: dict[str, Any], base: int, slot: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(seed=base + slot, warn_independent_sampling=False)


@SAMPLERS.register("qmc")
def _qmc(spec: dict[str, Any], base: int, slot: int) -> optuna.samplers.BaseSampler:
    # One low-discrepancy sequence for all slots: Optuna picks each trial's point from it.
    return optuna.samplers.QMCSampler(seed=base, warn_independent_sampling=False)


class FamilyMedianPruner(optuna.pruners.BasePruner):
    """Optuna's median rule, within a schedule family: at a step >= `n_warmup_steps`, prune
    the trial when its best value so far is worse than the median of the values that the
    completed trials *of its own family* reported at that step, once `n_startup_trials` of
    them have completed. In a one-family study every trial is of the family, and this is
    Optuna's `MedianPruner(n_startup_trials, n_warmup_steps)`.

    Why per family: schedules differ in how early they look good. A cosine or one-cycle
    schedule still at a high LR in its first epochs trails a constant LR that is already low,
    then overtakes it as it anneals; compared with every family, the annealing ones are pruned
    before they get there. B8 (BENCHMARKS.md) replayed both rules on 48 cross-family trials
    trained to the end: the median across families pruned 3 of the final top 5, the median
    within the family 1."""

    def __init__(self, n_startup_trials: int = 2, n_warmup_steps: int = 1) -> None:
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        family = trial.params.get(FAMILY_PARAM)
        peers = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.params.get(FAMILY_PARAM) == family]
        if len(peers) < self.n_startup_trials:
            return False
        at_step = [v for t in peers if (v := t.intermediate_values.get(step)) is not None
                   and math.isfinite(v)]
        if not at_step:
            return False
        mine = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
        if not mine:
            return True  # nothing finite reported: as Optuna's pruner, prune it
        median = statistics.median(at_step)
        if study.direction == optuna.study.StudyDirection.MAXIMIZE:
            return max(mine) < median
        return min(mine) > median


@PRUNERS.register("median")
def _median(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    return FamilyMedianPruner(n_startup_trials=2, n_warmup_steps=1)


@PRUNERS.register("hyperband")
def _hyperband(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec["epochs"])


@PRUNERS.register("successive_halving")
def _successive_halving(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner()


@PRUNERS.register("none")
def _none(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


def sampler(spec: dict[str, Any], slot: int) -> optuna.samplers.BaseSampler:
    """The study's sampler. Each slot gets its own seed (seed + slot), so parallel workers do
    not draw the same random start-up points, and a retried slot draws what it drew before.
    An unknown name raises Unregistered, listing the known ones."""
    s = spec["sampler"]
    base = s.get("seed") if s.get("seed") is not None else RunSpec.from_stored(spec).seed
    return SAMPLERS.get(s["name"])(spec, base, slot)


def pruner(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The study's pruner; an unknown name raises Unregistered, listing the known ones."""
    return PRUNERS.get(spec["pruner"]["name"])(spec)


# Optuna's storage is used by one thread (the worker's or the reaper's loop), one call at a
# time: one pooled connection, and one more should a call nest. At most 2 per process.
OPTUNA_POOL_SIZE, OPTUNA_MAX_OVERFLOW = 1, 1


def storage(url: str, application_name: str = "lrsearch") -> optuna.storages.RDBStorage:
    """Optuna's storage; pre-ping replaces connections the server dropped (a restart, a
    terminated backend) instead of failing the next call. At most OPTUNA_POOL_SIZE +
    OPTUNA_MAX_OVERFLOW connections, named `application_name` on PostgreSQL."""
    from sqlalchemy.engine import make_url

    from service.db import postgres_connect_args

    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_size": OPTUNA_POOL_SIZE,
                              "max_overflow": OPTUNA_MAX_OVERFLOW}
    if make_url(url).get_backend_name() == "postgresql":
        kwargs["connect_args"] = postgres_connect_args(application_name)
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def load(spec: dict[str, Any], name: str, rdb: optuna.storages.RDBStorage, slot: int
         ) -> optuna.Study:
    return optuna.create_study(study_name=name, storage=rdb, load_if_exists=True,
                               direction=RunSpec.from_stored(spec).objective.direction,
                               sampler=sampler(spec, slot),
                               pruner=pruner(spec))


def ask(study: optuna.Study, slot: int, attempt: int) -> optuna.Trial:
    """A new trial, marked with the slot and claim attempt that asked for it (what the
    reconciler needs to tell a live trial from a lost one)."""
    trial = study.ask()
    trial.set_user_attr(SLOT, slot)
    trial.set_user_attr(ATTEMPT, attempt)
    return trial


def retry_trial(study: optuna.Study, number: int, slot: int, attempt: int) -> optuna.Trial:
    """A new running trial with the same parameters as trial `number` (a lost attempt)."""
    storage = study._storage
    study_id = storage.get_study_id_from_name(study.study_name)
    old = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, number))
    template = optuna.trial.create_trial(
        state=TrialState.RUNNING, params=old.params, distributions=old.distributions,
        user_attrs={"lrsearch_retry_of": number, SLOT: slot, ATTEMPT: attempt})
    trial_id = storage.create_new_trial(study_id, template_trial=template)
    return optuna.Trial(study, trial_id)


def finish(rdb: optuna.storages.RDBStorage, trial_id: int, state: TrialState,
           values: list[float] | None = None, reason: str | None = None) -> bool:
    """Give a running trial its final state (with its reason, when it did not complete);
    False when somebody else finished it first."""
    try:
        if reason is not None and state != TrialState.COMPLETE:
            rdb.set_trial_user_attr(trial_id, LOST_REASON, reason[:500])
        return bool(rdb.set_trial_state_values(trial_id, state, values))
    except UpdateFinishedTrialError:
        return False


def fail(rdb: optuna.storages.RDBStorage, study_name: str, number: int, reason: str) -> None:
    """Mark a trial FAIL with its reason, if it is still running (idempotent)."""
    trial_id = rdb.get_trial_id_from_study_id_trial_number(
        rdb.get_study_id_from_name(study_name), number)
    if rdb.get_trial(trial_id).state == TrialState.RUNNING:
        finish(rdb, trial_id, TrialState.FAIL, reason=reason)
