"""Which parameters matter: Optuna's fANOVA importance of each schedule family's parameters,
computed over the study's complete search trials as our tables hold them.

The trials are rebuilt from our `trials` rows (family, params, value, state, role), not read
from the Optuna storage, so the figures describe exactly the trials the API lists. Each family
is evaluated on its own: a cross-family study's families have different parameters, and
Optuna's own study of it has only `family` in common to every trial. A parameter's
distribution is the one `lrsearch.schedules.search` samples it from, over its declared range
(a parameter sampled under another one, such as cyclical's base_lr < max_lr, keeps its declared
range, which holds every value it was given, so that every trial shares one distribution).

The evaluator is `optuna.importance.FanovaImportanceEvaluator(seed=SEED)`, named explicitly so
the numbers are reproducible and do not change with Optuna's default evaluator, normalised so
that a family's importances sum to 1. fANOVA's cost grows faster than linearly with the trials
(its random forest), so a family with more than MAX_TRIALS complete trials is evaluated on
MAX_TRIALS of them, evenly spaced by trial number; a process evaluates one study at a time, and
a result is kept per study until another trial of it completes (`of`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select
from sqlalchemy.orm import Session

from lrsearch.errors import LRSearchError
from lrsearch.schedules.search import distributions
from service.studies.models import Study, Trial
from service.studies.progress import objective_of

MIN_TRIALS = 2  # complete trials a family needs before its importance is computed
MAX_TRIALS = 200  # complete trials per family the evaluator is given, at most
SEED = 0  # fANOVA's random forest seed: the same trials give the same numbers
EVALUATOR = "fanova"
CACHED = 64  # studies whose last result is kept

# Each evaluation builds an in-memory Optuna study, which Optuna announces at INFO level; in a
# server's log that line would only puzzle its reader.
logging.getLogger("optuna.storages._in_memory").setLevel(logging.WARNING)


@dataclass(frozen=True)
class FamilySpace:
    """One family's searched parameters: its name, each parameter's Optuna distribution, and
    why it has none (None when it has some)."""

    family: str
    distributions: dict[str, BaseDistribution]
    reason: str | None = None

    def log(self, name: str) -> bool:
        """Whether the parameter is searched on a log scale."""
        return bool(getattr(self.distributions[name], "log", False))


@dataclass(frozen=True)
class Importance:
    """Per family: `importances` (parameter -> share of the objective's variance it explains,
    largest first, summing to 1), `trials` (the complete trials it was computed over) and
    `complete` (the family's complete search trials); `reasons`: why a family has none."""

    importances: dict[str, dict[str, float]] = field(default_factory=dict)
    trials: dict[str, int] = field(default_factory=dict)
    complete: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data: the body of GET /v1/studies/{id}/importance (schemas.ImportanceOut)."""
        return {"evaluator": EVALUATOR, "seed": SEED, "min_trials": MIN_TRIALS,
                "max_trials": MAX_TRIALS, "importances": self.importances,
                "trials": self.trials, "complete": self.complete, "reasons": self.reasons}


def spaces(spec: Mapping[str, Any]) -> list[FamilySpace]:
    """Each family of a study's stored spec with its searched parameters: those that are not
    fixed and can take more than one value (a one-value choice explains nothing)."""
    out = []
    for family in spec["families"]:
        try:
            found = distributions(family, (spec.get("search_space") or {}).get(family),
                                  epochs=spec["epochs"])
        except LRSearchError as e:  # a family no longer registered here, for one
            out.append(FamilySpace(family, {}, f"its search space cannot be built: {e}"))
            continue
        searched = {name: d for name, d in found.items() if not d.single()}
        reason = None if searched else (
            f"no searched parameter: every parameter of `{family}` is fixed (by the family's "
            "defaults or the study's search_space)")
        out.append(FamilySpace(family, searched, reason))
    return out


def search_trials(session: Session, study: Study, states: Sequence[str]) -> list[Trial]:
    """The study's search trials in `states` that ran with a family and parameters, by trial
    number."""
    return list(session.scalars(
        select(Trial).where(Trial.study_id == study.id, Trial.role == "search",
                            Trial.state.in_(list(states)), Trial.family.is_not(None),
                            Trial.params.is_not(None))
        .order_by(Trial.number, Trial.slot)))


def frozen_trials(rows: Sequence[Trial], space: FamilySpace) -> list[FrozenTrial]:
    """Optuna's complete trials equal to `rows` (complete ones with a value), with the family's
    searched parameters only; a row whose parameters do not fit the space (a value outside its
    range, one missing) is left out rather than guessed at."""
    out = []
    for row in rows:
        if row.value is None or not isinstance(row.params, dict):
            continue
        params = {name: row.params.get(name) for name in space.distributions}
        try:
            out.append(optuna.trial.create_trial(state=TrialState.COMPLETE, value=row.value,
                                                 params=params,
                                                 distributions=space.distributions))
        except (ValueError, TypeError):
            continue
    return out


def evenly(items: Sequence[Any], most: int) -> list[Any]:
    """At most `most` of `items`, evenly spaced, the first and last kept."""
    if len(items) <= most:
        return list(items)
    picks = np.unique(np.round(np.linspace(0, len(items) - 1, most)).astype(int))
    return [items[i] for i in picks]


def evaluate(trials: Sequence[FrozenTrial], direction: str) -> dict[str, float]:
    """Optuna's normalised fANOVA importances (seed SEED) over `trials`, largest first. Raises
    RuntimeError when the values do not vary (nothing to attribute)."""
    storage = optuna.storages.InMemoryStorage()
    study_direction = (StudyDirection.MAXIMIZE if direction == "maximize"
                       else StudyDirection.MINIMIZE)
    storage.create_new_study([study_direction], "importance")
    study = optuna.Study("importance", storage)
    study.add_trials(list(trials))
    found = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=SEED))
    return {name: float(value) for name, value in found.items()}


def compute(session: Session, study: Study) -> Importance:
    """The study's importances per family (see the module's docstring), and for every family
    left out, why."""
    direction = objective_of(study.spec)[1]
    rows = search_trials(session, study, ("complete",))
    result = Importance()
    for space in spaces(study.spec):
        family = space.family
        mine = [r for r in rows if r.family == family and r.value is not None]
        result.complete[family] = len(mine)
        if space.reason is not None:
            result.reasons[family] = space.reason
            continue
        trials = frozen_trials(mine, space)
        if len(trials) < MIN_TRIALS:
            unfit = len(mine) - len(trials)
            result.reasons[family] = (
                f"{len(trials)} complete search trial{'s' if len(trials) != 1 else ''}"
                f"{f' fit its search space ({unfit} do not)' if unfit else ''}; importance "
                f"needs at least {MIN_TRIALS}")
            continue
        used = evenly(trials, MAX_TRIALS)
        try:
            result.importances[family] = evaluate(used, direction)
        except RuntimeError:  # fANOVA: "zero total variance"
            result.reasons[family] = (f"its {len(used)} complete trials all have the same "
                                      "value: no variance to attribute to a parameter")
            continue
        except ValueError as e:
            result.reasons[family] = f"Optuna could not evaluate it: {e}"
            continue
        result.trials[family] = len(used)
    return result


_cache: OrderedDict[str, tuple[int, Importance]] = OrderedDict()
_lock = threading.Lock()  # guards _cache
# One evaluation at a time in a process: a big cross-family study costs seconds of CPU per
# family, and requests for it must not each start one (nor hold every thread meanwhile).
_computing = threading.Lock()


def of(session: Session, study: Study) -> Importance:
    """`compute`, kept per study (the CACHED most recently used) until its count of complete
    trials changes (a complete trial's parameters and value never change, and only complete
    trials count). One evaluation runs at a time per process: a request that finds another
    running answers the study's last result if there is one (its `complete` counts say which
    trials it describes), and otherwise waits its turn, reusing a result computed meanwhile."""
    def cached() -> tuple[Importance | None, Importance | None]:
        """(the kept result if it describes the study's complete trials, the kept result)."""
        with _lock:
            entry = _cache.get(study.id)
            if entry is None:
                return None, None
            _cache.move_to_end(study.id)
            n, result = entry
            return (result if n == study.n_complete else None), result

    fresh, stale = cached()
    if fresh is not None:
        return fresh
    # With a result to answer, never wait for another evaluation; without, wait.
    if not _computing.acquire(blocking=stale is None):
        assert stale is not None
        return stale
    try:
        if (fresh := cached()[0]) is not None:  # computed while this one waited
            return fresh
        result = compute(session, study)
        with _lock:
            _cache[study.id] = (study.n_complete, result)
            _cache.move_to_end(study.id)
            while len(_cache) > CACHED:
                _cache.popitem(last=False)
        return result
    finally:
        _computing.release()
