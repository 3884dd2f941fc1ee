"""Keeping Optuna's record in step with ours.

Our tables are the truth; Optuna is told after our transaction commits. A crash between the
two, or an Optuna storage that cannot be reached at that moment, leaves an Optuna trial
RUNNING whose slot is not running. Each pass of `Reconciler.run` (every worker's reaper pass,
and `lrsearch serve`'s reaper) finds those and gives them the state our row records:

- the slot's row carries this trial's number and a final state: COMPLETE with the row's
  value, PRUNED, or FAIL (failed, cancelled);
- the row carries it but was queued again (a lost attempt), or the slot's current attempt is
  a later one: FAIL;
- a RUNNING trial no row knows and that names no slot is failed only when a later pass, at
  least a lease later, still finds it so: a worker asks Optuna for a trial a moment before
  it records the trial's number, and that moment must not be mistaken for a loss.

Each study is read Optuna first, our rows second: a worker claims its slot (and commits)
before it asks Optuna, so every RUNNING trial the pass sees has its claim visible to the read
that follows, and a live trial is never taken for a lost one.

A study with a constant-LR baseline has a second Optuna study, `<name>.baseline`, checked
the same way against the baseline's slots (its trial numbers are its own). Confirmation runs
have no Optuna trial.

It also deletes Optuna studies whose study row is gone (a deleted study, where the API could
not delete the Optuna study itself).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.db import db_now
from service.jobs.models import Job
from service.studies.models import Study, Trial
from service.studies.roles import BASELINE_SUFFIX, baseline_trials, role_of
from worker import search

log = logging.getLogger("lrsearch.worker.reconcile")
WINDOW = timedelta(days=2)  # finished studies are checked this long after they finish
# "<tenant>.<study id>", and "<tenant>.<study id>.baseline" for the constant-LR baseline
OUR_NAME = re.compile(r"^([a-z0-9][a-z0-9_-]{0,63}\.[0-9a-f]{32})(\.baseline)?$")
TO_OPTUNA = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
             "failed": TrialState.FAIL, "cancelled": TrialState.FAIL}


@dataclass(frozen=True)
class Slot:
    """What our tables say of one trial slot."""

    number: int | None  # the Optuna trial number of the slot's current attempt
    state: str  # our trial row's state ("queued" when no row yet)
    value: float | None
    reason: str | None
    job_state: str
    job_attempt: int


@dataclass(frozen=True)
class StudyView:
    optuna_name: str
    slots: dict[int, Slot]  # by slot

    def by_number(self, number: int) -> tuple[int, Slot] | None:
        for slot, row in self.slots.items():
            if row.number == number:
                return slot, row
        return None


def _candidates(session: Session) -> list[tuple[str, str, str]]:
    """(study id, Optuna name, role) of the Optuna studies of the studies still running or
    finished recently (the search's, and the baseline's where there is one): only those can
    have a stray trial."""
    since = db_now(session) - WINDOW
    rows = session.execute(select(Study.id, Study.optuna_study_name, Study.spec).where(or_(
        Study.status.in_(("queued", "running")), Study.finished_at >= since))).all()
    out = []
    for study_id, name, spec in rows:
        out.append((study_id, name, "search"))
        if baseline_trials(spec or {}):
            out.append((study_id, name + BASELINE_SUFFIX, "baseline"))
    return out


def _view(session: Session, study_id: str, optuna_name: str, role: str = "search"
          ) -> StudyView:
    """Our rows of the slots of one study's role (the search's, or the baseline's), read
    fresh."""
    study = session.get(Study, study_id)
    jobs = {j.slot: j for j in session.scalars(select(Job).where(Job.study_id == study_id))}
    trials = {t.slot: t for t in session.scalars(select(Trial).where(
        Trial.study_id == study_id))}
    slots = {}
    for slot, job in jobs.items():
        if slot is None or study is None or role_of(study, slot) != role:
            continue
        t = trials.get(slot)
        slots[slot] = Slot(t.number if t else None, t.state if t else "queued",
                           t.value if t else None, t.failure_reason if t else None,
                           job.state, job.attempt)
    return StudyView(optuna_name, slots)


class Reconciler:
    """One per process that reaps; remembers unexplained RUNNING trials between passes."""

    def __init__(self, lease_seconds: float) -> None:
        self.lease_seconds = lease_seconds
        self._suspects: dict[tuple[str, int], float] = {}  # first seen unexplained (monotonic)

    def run(self, db: Callable[[Callable[[Session], Any]], Any],
            rdb: optuna.storages.RDBStorage) -> int:
        """One pass; returns how many Optuna records it changed."""
        changed = sum(self._study(db, rdb, study_id, name, role)
                      for study_id, name, role in db(_candidates))
        return changed + delete_orphans(rdb, db)

    def _study(self, db: Callable[[Callable[[Session], Any]], Any],
               rdb: optuna.storages.RDBStorage, study_id: str, optuna_name: str,
               role: str = "search") -> int:
        try:
            optuna_id = rdb.get_study_id_from_name(optuna_name)
        except KeyError:
            return 0  # no trial was ever asked for
        running = rdb.get_all_trials(optuna_id, deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return 0
        # Optuna first, our rows second: a trial a worker asked for before this read has its
        # claim committed before it, so the fresh read below sees the slot running under the
        # trial's attempt (read the other way round, a claim made between the two reads would
        # make a live trial look lost).
        view = db(lambda s: _view(s, study_id, optuna_name, role))
        changed = 0
        for trial in running:
            verdict = self._verdict(view, trial)
            if verdict is not None and _set(rdb, trial, *verdict):
                log.warning("Optuna trial %s of %s was RUNNING; set to %s (%s)", trial.number,
                            optuna_name, verdict[0].name, verdict[2])
                changed += 1
        return changed

    def _verdict(self, view: StudyView, trial: FrozenTrial
                 ) -> tuple[TrialState, float | None, str] | None:
        """The state this RUNNING Optuna trial should have, or None to leave it."""
        found = view.by_number(trial.number)
        if found is not None:
            _, row = found
            if row.state == "running":
                return None  # a worker holds it (or the reaper will requeue it first)
            if row.state in TO_OPTUNA:
                reason = row.reason or f"{row.state} (recorded before Optuna was told)"
                return TO_OPTUNA[row.state], row.value, reason
            return TrialState.FAIL, None, "lost attempt: its slot was queued again"
        slot, attempt = trial.user_attrs.get(search.SLOT), trial.user_attrs.get(search.ATTEMPT)
        if slot is not None and slot in view.slots:
            row = view.slots[slot]
            if row.job_state == "running" and row.job_attempt == attempt:
                return None  # asked a moment ago by the worker that holds the slot
            return TrialState.FAIL, None, f"lost attempt {attempt} of slot {slot}"
        key = (view.optuna_name, trial.number)
        first = self._suspects.setdefault(key, time.monotonic())
        if time.monotonic() - first < self.lease_seconds:
            return None
        del self._suspects[key]
        return TrialState.FAIL, None, "no trial slot records this Optuna trial"


def _set(rdb: optuna.storages.RDBStorage, trial: FrozenTrial, state: TrialState,
         value: float | None, reason: str) -> bool:
    """Finish the trial in Optuna; False when somebody else finished it first."""
    values: list[float] | None = None
    if state == TrialState.COMPLETE:
        if value is None:
            state = TrialState.FAIL
        else:
            values = [value]
    elif state == TrialState.PRUNED and trial.intermediate_values:
        values = [trial.intermediate_values[max(trial.intermediate_values)]]
    return search.finish(rdb, trial._trial_id, state, values, reason)


def delete_orphans(rdb: optuna.storages.RDBStorage,
                   db: Callable[[Callable[[Session], Any]], Any]) -> int:
    """Delete the Optuna studies named like ours whose study row is gone."""
    # Optuna's names first, ours second: a worker creates an Optuna study only after its
    # study row committed, so a study created between the two reads is never taken for gone.
    owner = {n: m.group(1) for n in optuna.study.get_all_study_names(rdb)
             if (m := OUR_NAME.match(n))}  # Optuna name -> its study's optuna_study_name
    names = sorted(set(owner.values()))

    def known(chunk: list[str]) -> Callable[[Session], set[str]]:
        return lambda s: set(s.scalars(select(Study.optuna_study_name).where(
            Study.optuna_study_name.in_(chunk))))

    ours: set[str] = set()
    for i in range(0, len(names), 500):  # bounded IN lists
        ours |= db(known(names[i:i + 500]))
    removed = 0
    for name, study_name in owner.items():
        if study_name not in ours:
            try:
                optuna.delete_study(study_name=name, storage=rdb)
            except KeyError:
                continue  # deleted by someone else meanwhile
            log.info("deleted Optuna study %s: its study was deleted", name)
            removed += 1
    return removed
