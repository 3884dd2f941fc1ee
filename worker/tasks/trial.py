"""One trial slot: Optuna ask (or the same parameters again on a retry), train in the child
with per-epoch reports for pruning, then record behind the lease's fence and tell Optuna.

A baseline slot does the same in the baseline's own Optuna study; a confirmation run trains
the configuration and seed its row was queued with, and Optuna never hears of it
(service/studies/roles.py).

Checkpoints (lrsearch.checkpoints): the child saves one after each epoch but the last, once this
process has recorded the epoch, in the slot's own folder under the shared checkpoint root. A
slot that starts and finds a checkpoint of the same configuration (a released, lost or crashed
attempt's) resumes from exactly that one (the child is given its folder): the trial row's
epochs become the checkpoint's, Optuna's new trial is given their values again, step by step
with its pruner asked as then, and training goes on at the next epoch with the checkpoint's
seed. Anything else starts from epoch 0. A checkpoint the child cannot restore is deleted and
the attempt is retried (one failure counted), so the next takes an older one or starts over.
The folder is deleted when the slot ends here (any outcome, a last failed attempt, a slot
cancelled before it ran); a released or retried attempt leaves it for the next. What a lost
last attempt or a cancelled queued slot leaves, the reaper deletes (worker.loop).

Optuna is told only after our transaction commits: our tables are the truth, and a crash
between the two leaves an Optuna trial RUNNING that worker/reconcile.py finishes the way our
row says. (Telling first could leave Optuna with a COMPLETE trial for a slot that our tables
then retry: two COMPLETE trials for one slot.)"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState
from sqlalchemy import select
from sqlalchemy.orm import Session

from lrsearch import checkpoints
from lrsearch.errors import LRSearchError
from lrsearch.schedules.search import suggest, suggest_any
from lrsearch.spec import RunSpec
from service.jobs import ops as jobs
from service.jobs.ops import Claim
from service.studies import progress, roles
from service.studies.models import Study, Trial
from worker import search
from worker.context import data_options
from worker.errors import Released, Retryable

if TYPE_CHECKING:
    from worker.context import TaskContext
    from worker.lease import Heartbeat

log = logging.getLogger("lrsearch.worker.trial")


@dataclass
class Plan:
    spec: dict[str, Any]  # the study's (the baseline's for a baseline slot): RunSpec + search
    optuna_name: str
    retry_number: int | None
    family: str | None
    params: dict[str, Any] | None
    tenant: str = ""
    role: str = "search"
    seed: int | None = None  # a confirmation run's, chosen when it was queued


def _plan(s: Session, c: Claim) -> Plan | None:
    job = jobs.fenced(s, c)
    study = progress.locked(s, c.study_id)
    assert c.slot is not None
    if study.status == "cancelled" or job.cancel_requested:
        progress.fail_unstarted_slot(s, study, c.slot, "cancelled", "cancelled")
        jobs.finish(s, c, "cancelled")
        return None
    old = s.scalar(select(Trial).where(Trial.study_id == study.id, Trial.slot == c.slot))
    role = roles.role_of(study, c.slot)
    if role == "confirm":
        assert old is not None and old.family is not None and old.seed is not None
        return Plan(study.spec, "", None, old.family, old.params, study.tenant, role, old.seed)
    spec, name = study.spec, study.optuna_study_name
    if role == "baseline":
        spec, name = roles.baseline_spec(spec), name + roles.BASELINE_SUFFIX
    if old is not None and old.number is not None:
        return Plan(spec, name, old.number, old.family, old.params, study.tenant, role)
    return Plan(spec, name, None, None, None, study.tenant, role)


@dataclass(frozen=True)
class Outcome:
    """What Optuna is told once our transaction committed."""

    state: TrialState
    value: float | None = None
    reason: str | None = None


def _tell(study: optuna.Study | None, trial: optuna.Trial | None, outcome: Outcome) -> None:
    """Tell Optuna once; a trial already finished (by the reconciler) is left as it is, and a
    confirmation run (no Optuna trial) tells nothing. A failure here is logged, not raised:
    our tables already hold the outcome, and the reconciler gives Optuna the same state at its
    next pass."""
    if study is None or trial is None:
        return
    try:
        if study._storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            return
        if outcome.reason is not None:
            trial.set_user_attr(search.LOST_REASON, outcome.reason[:500])
        if outcome.state == TrialState.COMPLETE:
            study.tell(trial, outcome.value)
        else:
            study.tell(trial, state=outcome.state)
    except UpdateFinishedTrialError:
        return
    except RuntimeError as e:
        # GridSampler calls study.stop() once the grid is used up, which only works inside
        # study.optimize(); the trial's state is already stored by then.
        if "Study.stop" not in str(e):
            log.warning("could not tell Optuna trial %s: %s", trial.number, e)
    except Exception as e:  # Optuna's storage away: the reconciler repairs it
        log.warning("could not tell Optuna trial %s: %s", trial.number, e)


def _config(w: TaskContext, spec: dict[str, Any], run: RunSpec, seed: int, family: str,
            params: dict[str, Any], tenant: str) -> dict[str, Any]:
    """The child's TrainConfig, as plain data: the study's RunSpec and this trial's schedule
    and seed (the study's seed plus the trial number; a confirmation run's own)."""
    return {"spec": run.stored(), "schedule": family, "schedule_params": params,
            "epochs": spec["epochs"], "seed": seed,
            "data_dir": str(w.settings.data_dir), "max_params": w.settings.max_model_params,
            **data_options(w.settings, tenant)}


def _folder(w: TaskContext, c: Claim) -> Path | None:
    """The slot's checkpoint folder; None with checkpoints off."""
    root = w.settings.checkpoint_root
    if root is None:
        return None
    assert c.slot is not None and c.study_id is not None
    return checkpoints.trial_dir(root, c.study_id, c.slot)


def _checkpoint(w: TaskContext, c: Claim, config: dict[str, Any]
                ) -> tuple[Path | None, checkpoints.Checkpoint | None]:
    """The slot's checkpoint folder (None with checkpoints off) and the checkpoint this attempt
    resumes from, if a previous attempt of the same configuration left one; `config` gets the
    child's CheckpointPlan, naming that checkpoint's own folder. Nothing is deleted here: this
    runs before the claim is checked again (in _start), and the child's first save removes
    the earlier attempts' checkpoints."""
    folder = _folder(w, c)
    if folder is None:
        return None, None
    fingerprint = checkpoints.fingerprint(config)
    found = checkpoints.latest(folder, fingerprint)
    if found is not None and found.epochs_done >= config["epochs"]:
        found = None
    config["checkpoint"] = {"folder": str(folder), "fingerprint": fingerprint,
                            "resume_from": None if found is None else str(found.path),
                            "attempt": c.attempt}
    return folder, found


def _report_resumed(ot: optuna.Trial | None, resumed: checkpoints.Checkpoint, metric: str
                    ) -> None:
    """Give the attempt's new Optuna trial the resumed epochs' values, step by step with its
    pruner asked after each as it was then, so that pruners that keep state in the trial
    (successive halving's and Hyperband's rungs) record each rung at its own step with that
    step's value. Their answer is not acted on here: the first epoch trained asks again."""
    if ot is None:
        return
    for record in resumed.records:
        value = (record.get("metrics") or {}).get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            try:
                ot.report(float(value), int(record["epoch"]))
                ot.should_prune()
            except UpdateFinishedTrialError:
                return  # finished behind our back: the reconciler sets its state


def _retry(w: TaskContext, c: Claim, study: optuna.Study | None, ot: optuna.Trial | None,
           folder: Path | None, reason: str) -> None:
    """A retryable failure: the slot goes back to the queue (its checkpoint kept for the next
    attempt) or, after its last attempt, fails (its checkpoint deleted)."""
    requeued = w.db(lambda s: jobs.retry_or_fail(s, jobs.fenced(s, c), reason,
                                                 w.settings.max_attempts))
    if not requeued:
        checkpoints.remove(folder)
    _tell(study, ot, Outcome(TrialState.FAIL, reason=reason))


def _sample(plan: Plan, ot: optuna.Trial) -> tuple[str, dict[str, Any]]:
    spec = plan.spec
    if len(spec["families"]) == 1:
        family = spec["families"][0]
        return family, suggest(ot, family, spec["search_space"].get(family),
                               epochs=spec["epochs"])
    return suggest_any(ot, spec["families"], spec["search_space"], epochs=spec["epochs"])


def run(w: TaskContext, c: Claim, beat: Heartbeat) -> None:
    plan = w.db(lambda s: _plan(s, c))
    if plan is None:  # cancelled before it ran: nothing will resume it
        checkpoints.remove(_folder(w, c))
        return
    assert c.slot is not None
    run_spec = RunSpec.from_stored(plan.spec)
    study: optuna.Study | None = None
    ot: optuna.Trial | None = None
    if plan.role == "confirm":  # no Optuna: the row says what to train
        assert plan.family is not None and plan.params is not None and plan.seed is not None
        family, params, number, seed = plan.family, plan.params, None, plan.seed
    else:
        study = search.load(plan.spec, plan.optuna_name, w.optuna, c.slot)
        if plan.retry_number is not None and plan.family and plan.params is not None:
            ot = search.retry_trial(study, plan.retry_number, c.slot, c.attempt)
            family, params = plan.family, plan.params
        else:
            ot = search.ask(study, c.slot, c.attempt)
            try:
                family, params = _sample(plan, ot)
            except LRSearchError as e:
                reason, asked = str(e), ot.number
                w.db(lambda s: _record_unrunnable(s, c, asked, reason))
                _tell(study, ot, Outcome(TrialState.FAIL, reason=reason))
                return
        number, seed = ot.number, run_spec.trial_seed(ot.number)
    config = _config(w, plan.spec, run_spec, seed, family, params, plan.tenant)
    folder, resumed = _checkpoint(w, c, config)
    if resumed is not None:
        seed = config["seed"] = resumed.seed
    w.db(lambda s: _start(s, c, w, number, family, params, seed, resumed))
    metric = run_spec.objective.metric
    if resumed is not None:
        log.info("job %s (study %s slot %s) resumes from its checkpoint after epoch %s",
                 c.job_id, c.study_id, c.slot, resumed.epochs_done - 1)
        _report_resumed(ot, resumed, metric)
    task = {"kind": "trial", "crash": c.slot in w.crash_slots, "config": config}

    def on_message(kind: str, payload: dict[str, Any]) -> str | None:
        if kind == "started":
            w.db(lambda s: _started(s, c, payload["steps_per_epoch"],
                                    payload.get("provenance")))
            return None
        if w.settings.fault_epoch_pause_seconds:
            time.sleep(w.settings.fault_epoch_pause_seconds)
        cancel, spent = w.db(lambda s: _epoch(s, c, w, payload))
        if spent:  # the study's budget ran out with this epoch: it stops, this trial too
            w.db(lambda s: progress.stop_for_budget(s, c.study_id))
            return "cancel"
        value = payload["metrics"].get(metric)
        if ot is not None and value is not None and math.isfinite(value):
            try:
                ot.report(value, payload["epoch"])
                if ot.should_prune():
                    return "prune"
            except UpdateFinishedTrialError:
                # Optuna's trial was finished behind our back; our tables are the record and
                # the reconciler sets Optuna's final state from them. Train on, unpruned.
                log.warning("Optuna trial %s is already finished; epoch %s not reported",
                            number, payload["epoch"])
        if cancel:
            return "cancel"
        # A worker that is shutting down hands the trial on at this epoch's end: the child
        # saves the checkpoint and stops, and another worker goes on from the next epoch.
        return "pause" if w.stopping and folder is not None else "go"

    def release() -> None:
        w.db(lambda s: jobs.release(s, c))
        _tell(study, ot, Outcome(TrialState.FAIL, reason="released: the worker shut down"))

    try:
        kind, payload = w.supervise(c, beat, task, on_message)
    except Released:
        release()
        return
    except Retryable as e:
        _retry(w, c, study, ot, folder, str(e))
        return
    if kind == "failed" and payload.get("kind") == "checkpoint" and resumed is not None:
        checkpoints.discard(resumed)  # the next attempt takes an older one, or starts over
        _retry(w, c, study, ot, folder, str(payload.get("message", "")))
        return
    if kind == "paused":  # after its checkpoint: the next attempt resumes from it
        log.info("job %s (study %s slot %s) paused after epoch %s: released", c.job_id,
                 c.study_id, c.slot, payload.get("epoch"))
        release()
        return
    outcome = w.db(lambda s: _finish(s, c, metric, kind, payload))
    checkpoints.remove(folder)  # the trial has ended: nothing will resume it
    if c.slot in w.exit_before_tell_slots:  # fault injection: die between the two writes
        os.kill(os.getpid(), signal.SIGKILL)
    _tell(study, ot, outcome)
    if kind == "failed" and payload.get("kind") in ("objective", "dataset_changed"):
        # Every trial would fail the same way: the study fails now, its queued slots with it.
        reason = str(payload.get("message", ""))
        w.db(lambda s: progress.fail_fast(s, c.study_id, reason))
    else:  # a finished trial may spend the patience (or the time) budget
        w.db(lambda s: progress.stop_for_budget(s, c.study_id))
    log.info("job %s (study %s slot %s) ended: %s %s", c.job_id, c.study_id, c.slot, kind,
             payload.get("message", "") if kind == "failed" else "")


def _trial(s: Session, c: Claim) -> tuple[Study, Trial]:
    study = progress.locked(s, c.study_id)
    trial = s.scalar(select(Trial).where(Trial.study_id == c.study_id, Trial.slot == c.slot))
    assert trial is not None
    return study, trial


def _start(s: Session, c: Claim, w: TaskContext, number: int | None, family: str,
           params: dict[str, Any], seed: int,
           resumed: checkpoints.Checkpoint | None = None) -> None:
    """The slot's trial row starts this attempt; a resumed one gets the checkpoint's epochs as
    its curve (the row's own are those of the attempt that wrote the checkpoint, or of a later
    one that died before its next checkpoint: the checkpoint's are the ones training goes on
    from)."""
    jobs.fenced(s, c, w.settings.lease_seconds)
    study = progress.locked(s, c.study_id)
    assert c.slot is not None
    trial = progress.start_trial(s, study, slot=c.slot, number=number, family=family,
                                 params=params, steps_per_epoch=0, worker=w.name,
                                 attempt=c.attempt)
    trial.seed = seed
    trial.resumed_from_epoch = None if resumed is None else resumed.epochs_done
    if resumed is not None:
        for record in resumed.records:
            progress.add_epoch(s, trial, record)


def _record_unrunnable(s: Session, c: Claim, number: int, reason: str) -> None:
    jobs.fenced(s, c)
    study = progress.locked(s, c.study_id)
    assert c.slot is not None
    progress.fail_unstarted_slot(s, study, c.slot, f"invalid sample: {reason}", "failed")
    jobs.finish(s, c, "failed", reason)


def _started(s: Session, c: Claim, spe: int, provenance: dict[str, Any] | None) -> None:
    """The child loaded the data and compiled the model: the trial's steps per epoch and
    what it trains on (lrsearch.runtime: backend, versions, device, precision, XLA)."""
    jobs.fenced(s, c)
    _, trial = _trial(s, c)
    trial.steps_per_epoch = spe
    trial.provenance = provenance


def _epoch(s: Session, c: Claim, w: TaskContext, record: dict[str, Any]
           ) -> tuple[bool, bool]:
    """Record the epoch; (whether the job's cancellation was asked, whether the study's
    budget is now spent)."""
    job = jobs.fenced(s, c, w.settings.lease_seconds)
    study, trial = _trial(s, c)
    progress.add_epoch(s, trial, record)
    study.epochs_run = (study.epochs_run or 0) + 1  # every epoch trained counts, retries too
    return job.cancel_requested, progress.budget_spent(study) is not None


def _finish(s: Session, c: Claim, metric: str, kind: str, payload: dict[str, Any]
            ) -> Outcome:
    """Record the outcome behind the fence; returns what Optuna is to be told after the
    commit."""
    jobs.fenced(s, c)
    row_study, trial = _trial(s, c)
    if kind == "done":
        value = payload["epochs"][-1]["metrics"].get(metric) if payload["epochs"] else None
        if value is None or not math.isfinite(value):
            kind, payload = "failed", {"kind": "diverged", "message": f"final {metric} is "
                                       f"{value}", "traceback": ""}
        else:
            progress.finish_trial(s, row_study, trial, "complete", value)
            jobs.finish(s, c, "done")
            return Outcome(TrialState.COMPLETE, value)
    if kind == "pruned":
        progress.finish_trial(s, row_study, trial, "pruned",
                              reason=f"pruned after epoch {payload['epoch']}")
        jobs.finish(s, c, "done")
        return Outcome(TrialState.PRUNED)
    if kind == "cancelled":
        progress.finish_trial(s, row_study, trial, "cancelled",
                              reason=f"cancelled after epoch {payload['epoch']}")
        jobs.finish(s, c, "cancelled")
        return Outcome(TrialState.FAIL, reason="cancelled")
    reason = f"{payload['kind']}: {payload['message']}"
    detail = f"{reason}\n{payload.get('traceback', '')}".strip()
    progress.finish_trial(s, row_study, trial, "failed", reason=detail)
    jobs.finish(s, c, "failed", reason)
    return Outcome(TrialState.FAIL, reason=reason)
