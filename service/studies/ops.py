"""Study use cases. Each takes a session and flushes; the caller commits."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from lrsearch import schedules
from lrsearch.errors import LRSearchError
from lrsearch.schedules.base import registry
from lrsearch.schedules.export import keras_config, python_snippet
from lrsearch.schedules.search import grid, grid_size, space
from service.config import Settings
from service.db import utcnow
from service.errors import Conflict, Invalid, NotFound
from service.jobs.models import Job
from service.notifications import ops as notifications
from service.range_tests.models import RangeTest
from service.requests import (
    insert_once,
    lock_tenant,
    replay,
    request_hash,
    require_at_most,
    require_room,
)
from service.runs import objective, recheck, run_spec
from service.schemas import finite_or_none
from service.studies import answer, progress
from service.studies.models import FINISHED, CurvePoint, Study, Trial
from service.studies.roles import (
    BASELINE_FAMILY,
    BASELINE_SUFFIX,
    baseline_trials,
    job_order,
    ranked,
)
from service.studies.schemas import BaselineSpec, EpochOut, StudyCreate, TrialOut

log = logging.getLogger("lrsearch.studies")


def _families(req: StudyCreate) -> list[str]:
    if (req.family is None) == (req.families is None):
        raise Invalid("Give exactly one of `family` or `families`.", field="family")
    names = [req.family] if req.family is not None else list(req.families or [])
    if len(set(names)) != len(names):
        raise Invalid(f"`families` lists a family twice. Received: families={names}",
                      field="families")
    for name in names:
        registry.get(name)  # ScheduleError (422) naming the unknown family
    return names


def _range_test_bounds(session: Session, tenant: str, range_test_id: str
                       ) -> dict[str, dict[str, Any]]:
    test = session.get(RangeTest, range_test_id)
    if test is None or test.tenant != tenant:
        raise Invalid(f"Unknown range test `{range_test_id}`.", field="range_test_id")
    if test.status != "succeeded" or not test.result:
        raise Invalid(f"Range test `{range_test_id}` has not succeeded (status "
                      f"{test.status}); its bounds are not known.", field="range_test_id")
    bounds: dict[str, dict[str, Any]] = test.result.get("family_bounds", {})
    return bounds


def _search_space(req: StudyCreate, families: list[str],
                  derived: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """User overrides on top of the range test's bounds, each validated against the family."""
    for name in req.search_space:
        if name not in families:
            raise Invalid(f"search_space: `{name}` is not one of the study's families "
                          f"{families}", field=f"search_space.{name}")
    resolved = {}
    for name in families:
        overrides = {**derived.get(name, {}), **req.search_space.get(name, {})}
        space(name, overrides, epochs=req.epochs)  # raises a ScheduleError naming the field
        resolved[name] = overrides
    return resolved


def _baseline(settings: Settings, req: StudyCreate, families: list[str],
              derived: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The constant-LR baseline as stored in the spec ({"trials", "search_space"}), or None
    when it is off: on by default unless the study searches `constant` itself."""
    asked = req.baseline
    if asked is None:
        if BASELINE_FAMILY in families:
            return None
        asked = BaselineSpec()
    if not asked.enabled:
        return None
    trials = asked.trials if asked.trials is not None else max(2, req.n_trials // 4)
    require_at_most(("baseline.trials", trials, settings.max_trials))
    overrides = {**derived.get(BASELINE_FAMILY, {}), **asked.search_space}
    try:
        space(BASELINE_FAMILY, overrides, epochs=req.epochs)
    except LRSearchError as e:
        raise Invalid(f"baseline.search_space: {e}", field="baseline.search_space") from None
    return {"trials": trials, "search_space": overrides}


def _confirm(settings: Settings, req: StudyCreate) -> dict[str, Any] | None:
    if req.confirm is None:
        return None
    runs = (req.confirm.top_k + 1) * req.confirm.seeds  # the top k and the best constant
    require_at_most(("confirmation runs ((confirm.top_k + 1) * confirm.seeds)", runs,
                     settings.max_trials))
    return req.confirm.model_dump()


def _check_grid(settings: Settings, req: StudyCreate, families: list[str],
                search_space: dict[str, dict[str, Any]]) -> None:
    """A grid search's size, from the grid the worker will hand Optuna's GridSampler (which
    builds every point in memory), computed with the same function and never built here."""
    if req.sampler.name != "grid":
        return
    if len(families) > 1:
        raise Invalid("The grid sampler searches one family (the family choice of a "
                      "cross-family study has no place on a grid). Received: "
                      f"sampler.name='grid', families={families}", field="sampler.name")
    values = grid(families[0], search_space[families[0]], epochs=req.epochs,
                  points=req.sampler.grid_points)
    total = grid_size(values)
    if total > settings.max_grid_points:
        sizes = " x ".join(f"{len(v)} ({k})" for k, v in values.items())
        raise Invalid(f"The grid must have <= {settings.max_grid_points} points "
                      f"(LRSEARCH_MAX_GRID_POINTS). Received: sampler.grid_points="
                      f"{req.sampler.grid_points} gives {sizes} = {total} points",
                      field="sampler.grid_points")


def validate(session: Session, settings: Settings, tenant: str, req: StudyCreate
             ) -> dict[str, Any]:
    """Every check before anything is stored; returns the resolved study spec: the RunSpec
    every trial shares (`run`) and the search around it."""
    require_at_most(("epochs", req.epochs, settings.max_epochs),
                    ("n_trials", req.n_trials, settings.max_trials),
                    ("batch_size", req.batch_size, settings.max_batch_size))
    families = _families(req)
    run = run_spec(session, settings, tenant, req, dataset=req.dataset,
                   batch_size=req.batch_size, seed=req.seed, goal=objective(req))
    derived = _range_test_bounds(session, tenant, req.range_test_id) if req.range_test_id else {}
    search_space = _search_space(req, families, derived)
    _check_grid(settings, req, families, search_space)
    notify = notifications.check_request(session, settings, tenant, req.notify)
    return {"run": run.stored(), "families": families, "epochs": req.epochs,
            "n_trials": req.n_trials, "search_space": search_space,
            "sampler": req.sampler.model_dump(), "pruner": req.pruner.model_dump(),
            "range_test_id": req.range_test_id,
            "budget": req.budget.model_dump() if req.budget is not None else None,
            "baseline": _baseline(settings, req, families, derived),
            "confirm": _confirm(settings, req),
            **({"notify": notify} if notify is not None else {})}


def create(session: Session, settings: Settings, tenant: str, req: StudyCreate,
           idempotency_key: str | None) -> Study:
    """Validate, then store the study, its N job rows (one per trial slot) at once.

    Safe under concurrency: the active-study check and the insert hold the tenant's lock, and
    requests racing with one Idempotency-Key all get the one study that was stored."""
    raw = req.model_dump(mode="json", exclude_unset=True)
    digest = request_hash(raw)
    found = replay(session, Study, tenant, idempotency_key, digest)
    if found is not None:
        return found
    spec = validate(session, settings, tenant, req)
    lock_tenant(session, "study", tenant)
    # Looked up again under the lock: a request with this key may have committed meanwhile,
    # and its retry must get that study, not a 429.
    found = replay(session, Study, tenant, idempotency_key, digest)
    if found is not None:
        return found
    # The dataset and model not deleted meanwhile; on a dataset still being registered the
    # jobs wait (the registration's end queues them or fails the study).
    spec, waiting = recheck(session, settings, tenant, spec)
    require_room(session, Study, tenant, settings.max_active_studies,
                 "LRSEARCH_MAX_ACTIVE_STUDIES", "studies")
    study_id = uuid.uuid4().hex
    slots = req.n_trials + baseline_trials(spec)
    study = Study(id=study_id, tenant=tenant, name=req.name, status="queued", request=raw,
                  spec=spec, optuna_study_name=f"{tenant}.{study_id}", n_trials=req.n_trials,
                  n_slots=slots, n_queued=slots, phase="search",
                  idempotency_key=idempotency_key, request_hash=digest)

    def add_jobs(study: Study) -> None:
        session.execute(insert(Job), [  # in claim order: the baseline spread through the search
            {"kind": "trial", "tenant": tenant, "study_id": study.id, "slot": i,
             "state": "waiting" if waiting else "queued", "attempt": 0,
             "cancel_requested": False, "created_at": study.created_at,
             "updated_at": study.created_at}
            for i in job_order(req.n_trials, baseline_trials(spec))])

    return insert_once(session, Study, tenant, idempotency_key, digest, study, add_jobs)


def get(session: Session, tenant: str, study_id: str) -> Study:
    study = session.get(Study, study_id)
    if study is None or study.tenant != tenant:
        raise NotFound(f"Unknown study `{study_id}`.", field="study_id")
    return study


def list_studies(session: Session, tenant: str, status: str | None, offset: int, limit: int
                 ) -> tuple[list[Study], int]:
    where = [Study.tenant == tenant] + ([Study.status == status] if status else [])
    total = session.scalar(select(func.count()).select_from(Study).where(*where)) or 0
    rows = session.scalars(select(Study).where(*where).order_by(Study.created_at.desc())
                           .offset(offset).limit(limit)).all()
    return list(rows), total


def cancel(session: Session, study: Study) -> Study:
    """Queued slots are cancelled now; running trials stop at their next epoch boundary."""
    if study.status in FINISHED:
        raise Conflict(f"Study `{study.id}` is already {study.status}.", field="status")
    queued = progress.stop_jobs(session, study.id)  # job rows first, as the workers lock
    study = progress.locked(session, study.id)
    if study.status in FINISHED:  # it finished while we waited for the lock
        raise Conflict(f"Study `{study.id}` is already {study.status}.", field="status")
    study.n_queued -= queued
    study.n_cancelled += queued
    study.status = "cancelled"
    study.finished_at = utcnow()
    notifications.study_ended(session, study)
    session.flush()
    return study


def delete(session: Session, study: Study) -> None:
    if study.status not in FINISHED:
        raise Conflict(f"Study `{study.id}` is {study.status}; cancel it before deleting.",
                       field="status")
    session.delete(study)
    session.flush()


def delete_optuna_study(settings: Settings, name: str) -> None:
    """Delete a deleted study's Optuna studies, the search's and the baseline's (none when no
    trial was ever asked for)."""
    import optuna  # here, not at import: only deletions need it

    storage = None
    try:
        storage = optuna.storages.RDBStorage(settings.optuna_url())
        for each in (name, name + BASELINE_SUFFIX):
            with contextlib.suppress(KeyError):  # none when no trial was ever asked for
                optuna.delete_study(study_name=each, storage=storage)
    except Exception as e:  # the workers' reconciler deletes it later
        log.warning("could not delete Optuna study %s: %s", name, e)
    finally:
        if storage is not None:
            storage.engine.dispose()  # one engine per deletion: give its connections back


def list_trials(session: Session, study: Study, offset: int, limit: int
                ) -> tuple[list[Trial], int]:
    total = session.scalar(select(func.count()).select_from(Trial)
                           .where(Trial.study_id == study.id)) or 0
    rows = session.scalars(select(Trial).where(Trial.study_id == study.id)
                           .order_by(Trial.slot).offset(offset).limit(limit)).all()
    return list(rows), total


def get_trial(session: Session, study: Study, number: int, role: str = "search") -> Trial:
    """The trial with Optuna number `number` among the search's trials, or the baseline's
    (whose numbers are those of its own Optuna study)."""
    trial = session.scalar(select(Trial).where(Trial.study_id == study.id, Trial.role == role,
                                               Trial.number == number))
    if trial is None:
        what = "trial" if role == "search" else f"{role} trial"
        raise NotFound(f"Study `{study.id}` has no {what} number {number}.", field="number")
    return trial


EXPORT_POINTS = 1000  # steps of the exported curve: only those are evaluated


def _export(family: str, params: dict[str, Any], spe: int, epochs: int) -> dict[str, Any]:
    """Curve at EXPORT_POINTS steps (however long the training: the submission capped the
    family's pieces, so this is bounded work), Keras config and snippet of a trial's schedule."""
    idx, lrs = schedules.sampled_curve(family, params, steps_per_epoch=spe, epochs=epochs,
                                       points=EXPORT_POINTS)
    curve = {"step": idx.tolist(), "epoch": (idx / spe).tolist(), "lr": lrs.tolist()}
    if registry.get(family).adaptive:
        return {"curve": curve, "keras": None, "snippet": None,
                "note": f"{family} is adaptive: use Keras' ReduceLROnPlateau with these "
                        "parameters; the applied LR per epoch is in `history`."}
    return {"curve": curve,
            "keras": keras_config(family, params, steps_per_epoch=spe, epochs=epochs),
            "snippet": python_snippet(family, params, steps_per_epoch=spe, epochs=epochs)}


def leaderboard(session: Session, study: Study) -> list[dict[str, Any]]:
    """The best complete search trial of each family, best family first."""
    maximize = progress.objective_of(study.spec)[1] == "maximize"
    best: dict[str, Trial] = {}  # the first of each family in rank order: its best
    for t in ranked(session, study, "search", maximize):
        if t.family is not None:
            best.setdefault(t.family, t)
    return [{"family": t.family, "value": finite_or_none(t.value), "trial_number": t.number,
             "params": t.params} for t in best.values()]


def best(session: Session, study: Study) -> dict[str, Any]:
    """The answer: the search's best single run, or, once a confirmation has finished, the
    configuration with the best mean over fresh seeds (`answer` says which); with the gain
    over the best constant LR (`baseline`) and the confirmation's figures (`confirmation`).
    `search_best` is always the search's single-run best, which Optuna's own `best_params`
    also gives."""
    if study.best_trial_number is None:
        raise NotFound(f"Study `{study.id}` has no completed trial yet.", field="best")
    searched = get_trial(session, study, study.best_trial_number)
    metric, direction = progress.objective_of(study.spec)
    maximize = direction == "maximize"
    confirmed = answer.confirmation(session, study, metric, maximize)
    trial, kind = searched, "single run"
    if confirmed is not None and confirmed["status"] in ("finished", "stopped") \
            and confirmed["winner"]:
        chosen = session.scalar(select(Trial).where(
            Trial.study_id == study.id, Trial.slot == confirmed["winner"]["slot"]))
        if chosen is not None:
            trial, kind = chosen, "confirmed"
    assert trial.family is not None and trial.params is not None
    compared = answer.baseline(session, study, searched, metric, maximize)
    spe = trial.steps_per_epoch or searched.steps_per_epoch or 1
    points = session.scalars(select(CurvePoint).where(CurvePoint.trial_id == trial.id)
                             .order_by(CurvePoint.epoch)).all()
    out = {"study_id": study.id, "family": trial.family, "params": trial.params,
           # confirmed: the mean over the confirmation's seeds; else the single run's value
           "value": finite_or_none(confirmed["winner"]["mean"] if kind == "confirmed"
                                   and confirmed else trial.value),
           "trial_number": trial.number, "answer": kind, "metric": metric, "direction": direction,
           "steps_per_epoch": spe, "epochs": study.spec["epochs"],
           "history": [EpochOut.of(p).model_dump() for p in points],
           **_export(trial.family, trial.params, spe, study.spec["epochs"]),
           "search_best": {"trial_number": searched.number, "family": searched.family,
                           "params": searched.params,
                           "value": finite_or_none(searched.value)},
           "baseline": compared,
           "confirmation": confirmed,
           # the conclusion: the confirmation's paired verdict once there is one, else the
           # single runs' (the search's best against the best constant)
           "verdict": (confirmed["gain"]["verdict"] if kind == "confirmed" and confirmed
                       and confirmed.get("gain") else (compared or {}).get("verdict"))}
    if len(study.spec["families"]) > 1:
        out["leaderboard"] = leaderboard(session, study)
    return out


def trial_out(trial: Trial, with_history: bool = False) -> TrialOut:
    return TrialOut.of(trial, with_history)
