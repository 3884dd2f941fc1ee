"""Optuna's record and ours cannot diverge: a worker killed between our commit and Optuna's
tell, a reaper that cannot reach Optuna, a transaction re-run after a lost acknowledgement,
a deleted study. Afterwards every slot's final Optuna trial is in the state our row records,
no slot has two COMPLETE Optuna trials, no Optuna trial is RUNNING without a running slot,
and the study finishes."""

from __future__ import annotations

import signal
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.trial import TrialState
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import utcnow
from service.jobs import ops as jobs
from service.jobs.models import Job
from service.studies.models import Study
from tests.worker.conftest import (
    Workers,
    finished,
    optuna_trials,
    study_row,
    submit,
    trials,
    wait_for,
)
from worker import search
from worker.loop import reap
from worker.reconcile import Reconciler
from worker.tasks import trial as trial_task

pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)
STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
          "failed": TrialState.FAIL, "cancelled": TrialState.FAIL}


def db_of(engine: Engine) -> Any:
    def db(fn: Any) -> Any:
        with Session(engine) as s, s.begin():
            return fn(s)
    return db


def assert_in_step(settings: Settings, engine: Engine, study_id: str) -> None:
    """Our rows and Optuna's agree, slot by slot."""
    rows = trials(engine, study_id)
    studied = optuna_trials(settings, engine, study_id)
    by_number = {t.number: t for t in studied}
    assert not [t.number for t in studied if t.state == TrialState.RUNNING]
    for row in rows:
        assert row.state in STATES, row.state
        if row.number is None:
            continue
        final = by_number[row.number]
        assert final.state == STATES[row.state], (row.slot, row.state, final.state)
        if row.state == "complete":
            assert final.value == pytest.approx(row.value)
    complete = Counter(t.user_attrs.get(search.SLOT) for t in studied
                       if t.state == TrialState.COMPLETE)
    assert all(n == 1 for n in complete.values()), complete


def test_a_worker_killed_between_our_commit_and_optunas_tell(
        client: TestClient, engine: Engine, workers: Workers, settings: Settings) -> None:
    sid = submit(client, n_trials=3)
    victim = workers.start(LRSEARCH_FAULT_EXIT_BEFORE_TELL_SLOTS="0")
    wait_for(lambda: victim.poll() is not None, 180, "the worker to die after slot 0's commit")
    assert victim.returncode == -signal.SIGKILL
    slot0 = next(t for t in trials(engine, sid) if t.slot == 0)
    assert slot0.state == "complete"  # our commit happened ...
    stray = next(t for t in optuna_trials(settings, engine, sid) if t.number == slot0.number)
    assert stray.state == TrialState.RUNNING  # ... Optuna was never told
    workers.start()
    wait_for(lambda: finished(engine, sid), 240, "the study to finish")
    wait_for(lambda: all(t.state != TrialState.RUNNING
                         for t in optuna_trials(settings, engine, sid)), 30,
             "the reconciler to finish the stray Optuna trial")
    assert study_row(engine, sid).status == "succeeded"
    assert_in_step(settings, engine, sid)
    repaired = next(t for t in optuna_trials(settings, engine, sid) if t.number == slot0.number)
    assert repaired.value == pytest.approx(slot0.value)


class Unreachable:
    """Optuna's real storage behind a network that drops the first `n` calls."""

    def __init__(self, rdb: optuna.storages.RDBStorage, n: int = 1) -> None:
        self.rdb, self.n = rdb, n

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.rdb, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.n > 0:
                self.n -= 1
                raise OperationalError("optuna storage", {}, ConnectionError("unreachable"))
            return attr(*args, **kwargs)
        return call


def start_slot(engine: Engine, settings: Settings, rdb: optuna.storages.RDBStorage,
               sid: str) -> tuple[jobs.Claim, optuna.Trial]:
    """What a worker does up to training: claim, ask Optuna, record the start."""
    db = db_of(engine)
    claim = db(lambda s: jobs.claim(s, "ghost", 60))
    assert claim is not None and claim.study_id == sid
    spec = study_row(engine, sid).spec
    study = search.load(spec, study_row(engine, sid).optuna_study_name, rdb, claim.slot or 0)
    ot = search.ask(study, claim.slot or 0, claim.attempt)
    family, params = trial_task._sample(trial_task.Plan(spec, "", None, None, None), ot)
    ghost = SimpleNamespace(settings=settings, name="ghost")
    db(lambda s: trial_task._start(s, claim, ghost, ot.number, family, params, ot.number))  # type: ignore[arg-type]
    return claim, ot


def test_a_reaper_that_cannot_reach_optuna_once(client: TestClient, engine: Engine,
                                                workers: Workers, settings: Settings) -> None:
    sid = submit(client, n_trials=2)
    rdb = search.storage(settings.optuna_url())
    _, lost = start_slot(engine, settings, rdb, sid)
    with Session(engine) as s, s.begin():  # the ghost worker stalls past its lease
        s.execute(update(Job).where(Job.study_id == sid, Job.state == "running")
                  .values(lease_expires_at=utcnow() - timedelta(minutes=5)))
    assert reap(settings, db_of(engine), Unreachable(rdb)) == 1
    assert rdb.get_trial(lost._trial_id).state == TrialState.RUNNING  # FAIL did not reach it
    assert Reconciler(settings.lease_seconds).run(db_of(engine), rdb) == 1
    assert rdb.get_trial(lost._trial_id).state == TrialState.FAIL
    workers.start()
    wait_for(lambda: finished(engine, sid), 240, "the study to finish")
    assert study_row(engine, sid).status == "succeeded"
    assert_in_step(settings, engine, sid)


def test_a_start_rerun_after_a_lost_acknowledgement_counts_once(
        client: TestClient, engine: Engine, settings: Settings) -> None:
    sid = submit(client, n_trials=3)
    rdb = search.storage(settings.optuna_url())
    claim, ot = start_slot(engine, settings, rdb, sid)
    # The database retry re-runs the same transaction: the start is already recorded.
    ghost = SimpleNamespace(settings=settings, name="ghost")
    with Session(engine) as s, s.begin():
        row = next(t for t in trials(engine, sid) if t.slot == claim.slot)
        trial_task._start(s, claim, ghost, ot.number, row.family or "", row.params or {}, ot.number)  # type: ignore[arg-type]
    study = study_row(engine, sid)
    assert (study.n_queued, study.n_running) == (2, 1)


def test_a_deleted_study_leaves_no_optuna_study(client: TestClient, engine: Engine,
                                                settings: Settings) -> None:
    sid = submit(client, n_trials=2)
    rdb = search.storage(settings.optuna_url())
    start_slot(engine, settings, rdb, sid)
    name = study_row(engine, sid).optuna_study_name
    assert name in optuna.get_all_study_names(rdb)
    assert client.post(f"/v1/studies/{sid}/cancel").status_code == 200
    assert client.delete(f"/v1/studies/{sid}").status_code == 204
    assert name not in optuna.get_all_study_names(rdb)
    # An Optuna study whose row is gone (the API could not delete it) is swept up.
    orphan = f"local.{'ab' * 16}"
    optuna.create_study(study_name=orphan, storage=rdb)
    kept = optuna.create_study(study_name="someone-elses-study", storage=rdb).study_name
    Reconciler(settings.lease_seconds).run(db_of(engine), rdb)
    names = optuna.get_all_study_names(rdb)
    assert orphan not in names and kept in names
    with Session(engine) as s:
        assert s.get(Study, sid) is None


@pytest.mark.parametrize("moment", ["after our study list", "after Optuna's read"])
def test_a_trial_asked_for_during_a_pass_is_never_failed(client: TestClient, engine: Engine,
                                                        settings: Settings,
                                                        moment: str) -> None:
    """A worker claims a slot and asks Optuna for a trial while a reconciler pass runs, at
    each moment between the pass's reads: the live trials stay RUNNING."""
    sid = submit(client, n_trials=3)
    rdb = search.storage(settings.optuna_url())
    _, first = start_slot(engine, settings, rdb, sid)  # a live trial: the pass reads Optuna
    calls, asked = [], []
    plain = db_of(engine)

    def concurrent_claim_and_ask() -> None:
        claim = plain(lambda s: jobs.claim(s, "other", 60))
        assert claim is not None
        row = study_row(engine, sid)
        study = search.load(row.spec, row.optuna_study_name, rdb, claim.slot or 0)
        asked.append(search.ask(study, claim.slot or 0, claim.attempt))

    def db(fn: Any) -> Any:
        calls.append(fn)
        if moment == "after Optuna's read" and len(calls) == 2:
            concurrent_claim_and_ask()  # Optuna's RUNNING trials are read; ours are next
        result = plain(fn)
        if moment == "after our study list" and len(calls) == 1:
            concurrent_claim_and_ask()  # our list is read; Optuna's trials are next
        return result

    assert Reconciler(settings.lease_seconds).run(db, rdb) == 0
    assert asked
    for trial in (first, *asked):
        assert rdb.get_trial(trial._trial_id).state == TrialState.RUNNING
