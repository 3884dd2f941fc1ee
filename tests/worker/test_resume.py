"""Scale-down and preemption lose no work: a trial whose worker is SIGTERMed (a scale-down) or
SIGKILLed (a preempted node) mid-run finishes on another worker from its last checkpoint, with
real worker processes and databases. Its recorded epochs are continuous and none was trained
twice (the study's epoch count is exactly the trial's), its LR at the first and the last step
of every epoch is the schedule's at that step (a restart at step 0 would give epoch k the LR
of epoch 0), Optuna's trial carries the whole curve, and the checkpoints are gone at the end."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from optuna.trial import TrialState
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from lrsearch import checkpoints
from lrsearch.schedules import curve
from service.config import Settings
from service.jobs.models import Job
from service.studies.models import CurvePoint, Trial
from tests.worker.conftest import (
    Workers,
    finished,
    jobs,
    optuna_trials,
    pid_of,
    study_row,
    submit,
    trials,
    wait_for,
)
from worker.loop import sweep_checkpoints

EPOCHS = 6
# Exponential decay per step: every step's LR differs, so a schedule that restarted, or went on
# at the wrong step, shows in the first LR of the epoch after the resume.
STUDY = {"family": "exponential", "epochs": EPOCHS, "batch_size": 64, "n_trials": 1,
         "baseline": {"enabled": False},
         "search_space": {"exponential": {"lr0": {"low": 0.05, "high": 0.2, "log": True},
                                          "k": {"low": 0.2, "high": 0.6},
                                          "per_epoch": {"value": False}}}}
# Each epoch waits this long in the worker before it is recorded (the child waits for the
# answer meanwhile): the window in which the test acts, after a checkpoint and before the
# next epoch is recorded.
PAUSE = "3"

pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)


def _folder(settings: Settings, study_id: str) -> Path:
    assert settings.checkpoint_root is not None
    return checkpoints.trial_dir(settings.checkpoint_root, study_id, 0)


def _epochs(engine: Engine, trial_id: int) -> list[CurvePoint]:
    with Session(engine) as s:
        return list(s.scalars(select(CurvePoint).where(CurvePoint.trial_id == trial_id)
                              .order_by(CurvePoint.epoch)))


def _assert_resumed(engine: Engine, settings: Settings, sid: str, first: Trial,
                    resumed_at: int) -> None:
    """The trial finished on another worker, resumed at epoch `resumed_at`, its curve whole."""
    [row] = trials(engine, sid)
    assert row.state == "complete" and row.worker != first.worker and row.attempt == 2
    assert row.params == first.params and row.seed == first.seed
    assert row.resumed_from_epoch == resumed_at
    points = _epochs(engine, row.id)
    assert [p.epoch for p in points] == list(range(EPOCHS))
    # Every epoch trained once: a resumed epoch retrained, or a restart, would count twice.
    assert study_row(engine, sid).epochs_run == EPOCHS
    spe = row.steps_per_epoch
    assert spe is not None and spe > 1
    assert row.family is not None and row.params is not None
    lrs = curve(row.family, row.params, steps_per_epoch=spe, epochs=EPOCHS)
    for p in points:
        assert p.lr_first == pytest.approx(lrs[p.epoch * spe], rel=1e-5), p.epoch
        assert p.lr_last == pytest.approx(lrs[(p.epoch + 1) * spe - 1], rel=1e-5), p.epoch
    # Optuna's trial for the second attempt carries the whole curve (the resumed epochs' values
    # reported again), so its pruner judged the trial on all of it.
    by_number = {t.number: t for t in optuna_trials(settings, engine, sid)}
    final = by_number[row.number]
    assert final.state == TrialState.COMPLETE
    assert sorted(final.intermediate_values) == list(range(EPOCHS))
    assert final.value == pytest.approx(row.value)
    assert not _folder(settings, sid).exists()  # deleted when the trial ended
    assert not (_folder(settings, sid).parent).exists()


def _wait_for_checkpoint(settings: Settings, sid: str, epochs: int) -> checkpoints.Checkpoint:
    def found() -> checkpoints.Checkpoint | None:
        c = checkpoints.latest(_folder(settings, sid))
        return c if c is not None and c.epochs_done >= epochs else None

    return wait_for(found, 120, f"a checkpoint after {epochs} epochs")  # type: ignore[no-any-return]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sigterm_hands_the_trial_on_at_an_epoch_end(client: TestClient, engine: Engine,
                                                    workers: Workers, settings: Settings
                                                    ) -> None:
    sid = submit(client, **STUDY)
    leaving = workers.start(LRSEARCH_FAULT_EPOCH_PAUSE_SECONDS=PAUSE)
    _wait_for_checkpoint(settings, sid, 1)
    [first] = trials(engine, sid)
    leaving.send_signal(signal.SIGTERM)
    # The epoch in progress is finished, recorded and checkpointed, then the slot is released.
    assert leaving.wait(timeout=60) == 0
    assert "paused after epoch" in workers.log(0)
    [job] = jobs(engine, sid)
    assert job.state == "queued" and job.failures == 0
    saved = checkpoints.latest(_folder(settings, sid))
    assert saved is not None and 2 <= saved.epochs_done < EPOCHS
    assert [p.epoch for p in _epochs(engine, first.id)] == list(range(saved.epochs_done))
    workers.start()
    wait_for(lambda: finished(engine, sid), 240, "another worker to finish the trial")
    _assert_resumed(engine, settings, sid, first, saved.epochs_done)
    assert f"resumes from its checkpoint after epoch {saved.epochs_done - 1}" in workers.log(1)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_sigkill_resumes_from_the_last_checkpoint(client: TestClient, engine: Engine,
                                                  workers: Workers, settings: Settings) -> None:
    sid = submit(client, **STUDY)
    workers.start(LRSEARCH_FAULT_EPOCH_PAUSE_SECONDS=PAUSE)
    # Killed while the epoch after the checkpoint waits to be recorded: it is lost with the
    # worker, and the next attempt trains it from the checkpoint.
    saved = _wait_for_checkpoint(settings, sid, 2)
    [first] = trials(engine, sid)
    os.kill(pid_of(first.worker), signal.SIGKILL)
    assert [p.epoch for p in _epochs(engine, first.id)] == list(range(saved.epochs_done))
    workers.start()
    wait_for(lambda: finished(engine, sid), 240, "another worker to finish the trial")
    _assert_resumed(engine, settings, sid, first, saved.epochs_done)
    [job] = jobs(engine, sid)
    assert job.failures == 1  # the lost lease counts as one failed attempt


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_checkpoint_that_cannot_be_restored_is_discarded_and_the_trial_starts_over(
        client: TestClient, engine: Engine, workers: Workers, settings: Settings) -> None:
    sid = submit(client, **STUDY)
    leaving = workers.start(LRSEARCH_FAULT_EPOCH_PAUSE_SECONDS=PAUSE)
    _wait_for_checkpoint(settings, sid, 1)
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(timeout=60) == 0
    saved = checkpoints.latest(_folder(settings, sid))
    assert saved is not None
    # Another model's variables under a digest that matches: only restoring can tell.
    np.savez(saved.state_file, m0=np.zeros(3), o0=np.zeros(1))
    meta = json.loads((saved.path / checkpoints.META).read_text())
    meta["sha256"] = hashlib.sha256(saved.state_file.read_bytes()).hexdigest()
    (saved.path / checkpoints.META).write_text(json.dumps(meta))
    workers.start()
    wait_for(lambda: finished(engine, sid), 240, "another worker to finish the trial")
    [row] = trials(engine, sid)
    assert row.state == "complete" and row.resumed_from_epoch is None and row.attempt == 3
    assert [p.epoch for p in _epochs(engine, row.id)] == list(range(EPOCHS))
    [job] = jobs(engine, sid)
    assert job.failures == 1
    reasons = [t.user_attrs.get("lrsearch_failure", "")
               for t in optuna_trials(settings, engine, sid) if t.state == TrialState.FAIL]
    assert any("could not be restored" in r for r in reasons), reasons
    assert not _folder(settings, sid).exists()


def _db(engine: Engine) -> Callable[[Callable[[Session], Any]], Any]:
    def run(fn: Callable[[Session], Any]) -> Any:
        with Session(engine) as s, s.begin():
            return fn(s)

    return run


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_reaper_sweeps_the_checkpoints_of_ended_and_deleted_studies(
        client: TestClient, engine: Engine, settings: Settings) -> None:
    live, ended = submit(client), submit(client)
    for sid in (live, ended):
        _folder(settings, sid).mkdir(parents=True)
    # In the running study, slot 1's job has ended (as a last attempt lost with its worker
    # leaves it): its folder goes, slot 0's (queued) stays.
    slot1 = checkpoints.trial_dir(root := settings.checkpoint_root or Path(), live, 1)
    slot1.mkdir(parents=True)
    with Session(engine) as s, s.begin():
        s.execute(update(Job).where(Job.study_id == live, Job.slot == 1)
                  .values(state="failed"))
    assert client.post(f"/v1/studies/{ended}/cancel").status_code == 200
    assert sweep_checkpoints(settings, _db(engine)) == [ended]
    assert _folder(settings, live).is_dir() and not _folder(settings, ended).parent.exists()
    assert not slot1.exists() and checkpoints.slots(root, live) == [0]
    # A deleted study's folder (a study ends before it can be deleted) goes too.
    assert client.post(f"/v1/studies/{live}/cancel").status_code == 200
    assert client.delete(f"/v1/studies/{live}").status_code == 204
    assert sweep_checkpoints(settings, _db(engine)) == [live]
    assert settings.checkpoint_root is not None and not any(settings.checkpoint_root.iterdir())
