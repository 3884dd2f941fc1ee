"""Recording what trials do, keeping the study's summary row current in the same transaction.

These are the writes a worker makes (start a trial, add an epoch, finish it). Each one updates
the study's counts and best trial, so `GET /v1/studies/{id}` reads one row, however many
trials there are. The caller owns the transaction, and loads the study with `locked()`: the
counters are read-modify-write, and two workers finishing trials of one study at once would
otherwise lose an update. Lock order everywhere: the job row first, then the study row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from lrsearch.spec import RunSpec
from service.db import utcnow
from service.jobs.models import Job
from service.notifications import ops as notifications
from service.studies import roles
from service.studies.models import CurvePoint, Study, Trial

FINAL_STATES = {"complete": "n_complete", "pruned": "n_pruned", "failed": "n_failed",
                "cancelled": "n_cancelled"}


def locked(session: Session, study_id: str | None) -> Study:
    """The study row, locked for this transaction (SELECT ... FOR UPDATE on PostgreSQL; SQLite
    already serialises writers) and read fresh."""
    study = session.get(Study, study_id, with_for_update=True, populate_existing=True)
    if study is None:
        raise LookupError(f"study {study_id} does not exist")
    return study


def _clean(value: float | None) -> float | None:
    """NaN and infinities are stored as NULL: a diverged value has its reason instead."""
    return value if value is not None and math.isfinite(value) else None


def start_trial(session: Session, study: Study, *, slot: int, number: int | None, family: str,
                params: dict[str, Any], steps_per_epoch: int, worker: str, attempt: int = 1
                ) -> Trial:
    """A slot starts running (moves from queued to running in the summary). Idempotent for
    one attempt: a transaction re-run after a commit whose acknowledgement was lost finds the
    trial already started and counts nothing twice."""
    trial = session.scalar(select(Trial).where(Trial.study_id == study.id, Trial.slot == slot))
    if trial is not None and trial.state == "running" and trial.number == number \
            and trial.attempt == attempt and trial.worker == worker:
        return trial
    if trial is None:
        trial = Trial(study_id=study.id, slot=slot, role=roles.role_of(study, slot))
        session.add(trial)
    else:  # a retry of a lost attempt (its curve starts again), or a confirmation run's
        # row, written when it was queued
        session.execute(delete(CurvePoint).where(CurvePoint.trial_id == trial.id))
    study.n_queued -= 1
    trial.number, trial.family, trial.params = number, family, params
    trial.steps_per_epoch, trial.worker, trial.attempt = steps_per_epoch, worker, attempt
    trial.state, trial.value, trial.failure_reason = "running", None, None
    trial.started_at, trial.finished_at = utcnow(), None
    trial.provenance = None  # this attempt's child reports its own once the model is compiled
    study.n_running += 1
    if study.status == "queued":
        study.status, study.started_at = "running", utcnow()
    session.flush()
    return trial


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, float | None]:
    """The record's `metrics` (Keras' log name -> value) as stored: names as text, values as
    floats, None for a missing or non-finite value (JSON has no NaN)."""
    metrics = record.get("metrics")
    if not isinstance(metrics, Mapping):
        raise ValueError("An epoch record must carry `metrics`, a mapping of Keras' log names "
                         "to numbers, as lrsearch.training.EpochRecord.as_dict() gives it. "
                         f"Received: metrics={metrics!r} (record keys {sorted(record)})")
    out: dict[str, float | None] = {}
    for name, value in metrics.items():
        try:
            out[str(name)] = _clean(None if value is None else float(value))
        except (TypeError, ValueError):
            raise ValueError(f"Metric `{name}` of an epoch record must be a number or null. "
                             f"Received: {name}={value!r}") from None
    return out


def add_epoch(session: Session, trial: Trial, record: Mapping[str, Any]) -> None:
    """One epoch's curve point, from the record lrsearch.training.EpochRecord.as_dict() gives:
    `epoch`, `lr_first`, `lr_last`, `seconds` and `metrics` (every metric Keras logged)."""
    session.merge(CurvePoint(trial_id=trial.id, epoch=int(record["epoch"]),
                             metrics=epoch_metrics(record),
                             **{k: _clean(record.get(k))
                                for k in ("lr_first", "lr_last", "seconds")}))
    session.flush()


def objective_of(spec: Mapping[str, Any]) -> tuple[str, str]:
    """(metric, direction) a study optimises, from its stored spec: the RunSpec's objective
    (`spec["run"]["objective"]`), or the flat `metric` and `direction` of studies stored
    before RunSpec existed."""
    objective = RunSpec.from_stored(dict(spec)).objective
    return objective.metric, objective.direction


def _better(study: Study, value: float) -> bool:
    if study.best_value is None:
        return True
    if objective_of(study.spec)[1] == "maximize":
        return value > study.best_value
    return value < study.best_value


def finish_trial(session: Session, study: Study, trial: Trial, state: str,
                 value: float | None = None, reason: str | None = None) -> None:
    """A running trial ends: complete (with its value), pruned, failed (with a reason) or
    cancelled; the study's counts follow, and its best and patience count for search trials
    only (a baseline or confirmation run is not a search result)."""
    if state not in FINAL_STATES:
        raise ValueError(f"unknown final trial state {state!r}")
    trial.state, trial.value, trial.failure_reason = state, _clean(value), reason
    trial.finished_at = utcnow()
    trial.duration_s = (trial.finished_at - trial.started_at).total_seconds()
    study.n_running -= 1
    setattr(study, FINAL_STATES[state], getattr(study, FINAL_STATES[state]) + 1)
    clean = _clean(value)
    searched = (trial.role or "search") == "search"
    if searched and state == "complete" and clean is not None and _better(study, clean):
        study.best_value, study.best_trial_number = clean, trial.number
        study.best_family, study.best_params = trial.family, trial.params
        study.since_best = 0
    elif searched and state in ("complete", "pruned"):
        study.since_best = (study.since_best or 0) + 1
    _maybe_finished(session, study)
    session.flush()


def requeue_trial(session: Session, study: Study, trial: Trial, reason: str | None) -> None:
    """A started trial's attempt was lost or released: the slot is queued again."""
    trial.state, trial.failure_reason = "queued", reason
    study.n_running -= 1
    study.n_queued += 1
    session.flush()


def fail_unstarted_slot(session: Session, study: Study, slot: int, reason: str,
                        state: str) -> None:
    """A slot that never got a running trial ends (failed, or cancelled)."""
    trial = session.scalar(select(Trial).where(Trial.study_id == study.id, Trial.slot == slot))
    if trial is None:
        trial = Trial(study_id=study.id, slot=slot, attempt=0, role=roles.role_of(study, slot))
        session.add(trial)
    final = "cancelled" if state == "cancelled" else "failed"
    trial.state, trial.failure_reason, trial.finished_at = final, reason, utcnow()
    study.n_queued -= 1
    setattr(study, FINAL_STATES[final], getattr(study, FINAL_STATES[final]) + 1)
    _maybe_finished(session, study)
    session.flush()


def _maybe_finished(session: Session, study: Study) -> None:
    """Every slot finished: the confirmation runs are queued when the study asks for them
    (unless its epoch or time budget is spent), else the study ends: succeeded if any trial
    completed, failed if none did."""
    if study.n_queued == 0 and study.n_running == 0 and study.status in ("queued", "running"):
        maximize = objective_of(study.spec)[1] == "maximize"
        if budget_spent(study, patience=False) is None \
                and roles.start_confirmation(session, study, maximize):
            return
        study.status = "succeeded" if study.best_trial_number is not None else "failed"
        study.finished_at = utcnow()
        if study.status == "failed":
            study.error = ("No trial completed." if study.n_complete == 0 else
                           "No search trial completed (only baseline trials did).")
        notifications.study_ended(session, study)  # committed with the end, or not at all


def budget_spent(study: Study, patience: bool = True) -> str | None:
    """Which budget of the study's (spec["budget"]) is spent, in words; None while none is
    (or it has none). Read from the study row alone: cheap on every epoch. Epochs and seconds
    cover every slot (baseline and confirmation runs too); patience counts search trials and
    ends the search, never the confirmation that follows it (`patience=False`, or the study's
    confirm phase, leaves it out)."""
    budget = (study.spec or {}).get("budget") or {}
    if budget.get("max_epochs") is not None and (study.epochs_run or 0) >= budget["max_epochs"]:
        return f"budget: {study.epochs_run} epochs trained (max_epochs={budget['max_epochs']})"
    if budget.get("max_seconds") is not None and study.started_at is not None:
        spent = (utcnow() - study.started_at).total_seconds()
        if spent >= budget["max_seconds"]:
            return (f"budget: {spent:.0f} s since the first trial started "
                    f"(max_seconds={budget['max_seconds']:g})")
    if patience and study.phase != "confirm" and budget.get("patience") is not None \
            and (study.since_best or 0) >= budget["patience"]:
        return (f"budget: {study.since_best} finished trials without a better value "
                f"(patience={budget['patience']})")
    return None


def stop_for_budget(session: Session, study_id: str | None) -> str | None:
    """Stop a study whose budget is spent: its queued slots are cancelled and its running
    trials stop at their next epoch; the study then ends as its finished trials say
    (succeeded with a best), with `stop_reason`. Returns the reason, None when nothing was
    spent (or the study had already stopped). Takes job rows before the study row."""
    peek = session.get(Study, study_id)
    if peek is None or budget_spent(peek) is None:
        return None
    if peek.stop_reason is not None and peek.phase != "confirm":
        return None  # stopped already (a confirmation after a patience stop may stop again)
    # Patience ends the search only: the baseline's slots still run (the comparison needs
    # them). Epochs and seconds budgets stop everything.
    search_only = budget_spent(peek, patience=False) is None
    queued = stop_jobs(session, study_id, below_slot=peek.n_trials if search_only else None)
    study = locked(session, study_id)
    reason = budget_spent(study) or "budget spent"
    if study.stop_reason is None:
        study.stop_reason = reason
    elif "confirmation stopped" not in study.stop_reason:
        study.stop_reason = f"{study.stop_reason}; confirmation stopped by {reason}"
    study.n_queued -= queued
    study.n_cancelled += queued
    _maybe_finished(session, study)
    session.flush()
    return reason


def stop_jobs(session: Session, study_id: str | None, below_slot: int | None = None) -> int:
    """Cancel the study's queued (and waiting) jobs and ask its running ones to stop at their
    next epoch boundary (only slots below `below_slot` when given: the search's); returns how
    many queued jobs were cancelled. Trial rows already written for those slots (confirmation
    runs, requeued attempts) are cancelled with them. Takes the job rows' locks: call it
    before locking the study row (the workers' lock order)."""
    where = [Job.study_id == study_id] + ([Job.slot < below_slot] if below_slot is not None
                                          else [])
    slots = session.scalars(update(Job).where(*where, Job.state.in_(("waiting", "queued")))
                            .values(state="cancelled").returning(Job.slot)).all()
    session.execute(update(Job).where(*where, Job.state == "running")
                    .values(cancel_requested=True))
    if slots:
        session.execute(update(Trial).where(Trial.study_id == study_id,
                                            Trial.slot.in_(list(slots)),
                                            Trial.state == "queued")
                        .values(state="cancelled", finished_at=utcnow(),
                                failure_reason="cancelled before it started"))
    return len(slots)


def fail_fast(session: Session, study_id: str | None, reason: str) -> None:
    """A study stops now, with `reason`, because every trial would fail the same way (its
    objective metric is not logged, its dataset changed): queued slots are cancelled, running
    ones asked to stop, and no confirmation starts (`phase` "ended"). It fails when no search
    trial completed; otherwise it ends succeeded with its best once nothing runs."""
    queued = stop_jobs(session, study_id)
    study = locked(session, study_id)
    study.n_queued -= queued
    study.n_cancelled += queued
    if study.phase == "search":
        study.phase = "ended"
    if study.stop_reason is None:
        study.stop_reason = f"stopped early: {reason}"
    if study.status != "cancelled" and study.best_trial_number is None:
        study.status, study.error = "failed", reason
        study.finished_at = study.finished_at or utcnow()
        notifications.study_ended(session, study)
    _maybe_finished(session, study)
    session.flush()
