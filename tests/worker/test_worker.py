"""The worker's promises, with real processes, signals and databases: a study of N trials
ends with exactly N finished trials whatever a worker does, and a result written by a worker
that lost its claim is never counted."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from optuna.trial import TrialState
from sqlalchemy import text
from sqlalchemy.engine import Engine

from service.config import Settings
from tests.worker.conftest import (
    LEASE,
    Workers,
    finished,
    jobs,
    optuna_trials,
    pid_of,
    points,
    running_trial,
    study_row,
    submit,
    trials,
    wait_for,
)

LONG = {"epochs": 30, "batch_size": 8}  # a few seconds per trial: room to interfere

# Real processes on a 2-core machine: one unexplained wait timeout was seen once in six full
# runs (a worker idle, no trial observed running). A failed attempt is rerun once; the first
# attempt's report, with every job and trial row, still shows in the output as RERUN.
pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)


def child_pids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's parent may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def total_points(engine: Engine, study_id: str) -> int:
    return sum(points(engine, t.id) for t in trials(engine, study_id))


def assert_exactly_n_finished(engine: Engine, study_id: str, n: int) -> None:
    study = study_row(engine, study_id)
    assert study.n_complete + study.n_pruned + study.n_failed == n
    assert study.n_queued == study.n_running == 0
    rows = trials(engine, study_id)
    assert sorted(t.slot for t in rows) == list(range(n))
    assert Counter(t.state for t in rows)["complete"] == study.n_complete


def test_two_workers_finish_exactly_n_trials(client: TestClient, engine: Engine,
                                             workers: Workers, settings: Settings) -> None:
    sid = submit(client, n_trials=6)
    workers.start()
    workers.start()
    wait_for(lambda: finished(engine, sid), 240, "the study to finish")
    assert study_row(engine, sid).status == "succeeded"
    assert_exactly_n_finished(engine, sid, 6)
    assert all(j.state == "done" and j.attempt == 1 for j in jobs(engine, sid))
    studied = optuna_trials(settings, engine, sid)
    assert sorted(t.number for t in studied) == sorted(t.number for t in trials(engine, sid))
    assert all(t.state == TrialState.COMPLETE for t in studied)
    best = client.get(f"/v1/studies/{sid}/best").json()
    assert best["value"] == max(t.value for t in studied)


def test_sigkill_mid_trial_is_recovered_after_the_lease(client: TestClient, engine: Engine,
                                                         workers: Workers,
                                                         settings: Settings) -> None:
    sid = submit(client, n_trials=3, **LONG)
    workers.start()
    workers.start()
    victim = wait_for(lambda: running_trial(engine, sid, 2), 120, "a trial to be running")
    children = child_pids(pid_of(victim.worker))
    assert children, "the worker runs its trial in a child process"
    os.kill(pid_of(victim.worker), signal.SIGKILL)
    # The training child dies with its worker: it must not train on for a job it lost.
    wait_for(lambda: not any(alive(p) for p in children), 10, "the child to die with it")
    wait_for(lambda: finished(engine, sid), 240, "the study to finish")
    assert_exactly_n_finished(engine, sid, 3)
    retried = next(t for t in trials(engine, sid) if t.slot == victim.slot)
    assert retried.attempt == 2 and retried.params == victim.params
    assert retried.worker != victim.worker and retried.state == "complete"
    studied = {t.number: t for t in optuna_trials(settings, engine, sid)}
    lost = studied[victim.number]
    assert lost.state == TrialState.FAIL and "lease expired" in lost.user_attrs[
        "lrsearch_failure"]
    assert studied[retried.number].params == lost.params
    assert sum(t.state == TrialState.COMPLETE for t in studied.values()) == 3


# PostgreSQL only: a process stopped inside a transaction would hold SQLite's single write
# lock (PostgreSQL ends such a transaction after idle_in_transaction_session_timeout).
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_sigstopped_worker_cannot_record_after_its_lease_expired(
        client: TestClient, engine: Engine, workers: Workers, settings: Settings) -> None:
    sid = submit(client, n_trials=1, **LONG)
    stalled = workers.start()
    victim = wait_for(lambda: running_trial(engine, sid, 1), 120, "the trial to run")
    stalled.send_signal(signal.SIGSTOP)
    workers.start()
    wait_for(lambda: finished(engine, sid), 240, "the other worker to finish the slot")
    stalled.send_signal(signal.SIGCONT)
    wait_for(lambda: "no longer held" in workers.log(0) or "lease lost" in workers.log(0), 60,
             "the stalled worker to notice it lost the lease")
    study = study_row(engine, sid)
    assert study.status == "succeeded" and study.n_complete == 1 and study.n_running == 0
    [row] = trials(engine, sid)
    assert row.worker != victim.worker and row.attempt == 2
    assert points(engine, row.id) == 30
    states = Counter(t.state for t in optuna_trials(settings, engine, sid))
    assert states == {TrialState.COMPLETE: 1, TrialState.FAIL: 1}


def test_crashing_child_fails_its_slot_after_max_attempts(client: TestClient, engine: Engine,
                                                          workers: Workers) -> None:
    sid = submit(client, n_trials=3)
    workers.start(LRSEARCH_FAULT_CRASH_SLOTS="1")
    wait_for(lambda: finished(engine, sid), 300, "the study to finish")
    study = study_row(engine, sid)
    assert study.status == "succeeded" and study.n_complete == 2 and study.n_failed == 1
    crashed = next(t for t in trials(engine, sid) if t.slot == 1)
    assert crashed.state == "failed"
    assert "child process died (exit code -11)" in crashed.failure_reason
    assert "attempt 3 of 3" in crashed.failure_reason
    job = jobs(engine, sid)[1]
    assert job.state == "failed" and job.failures == 3


def test_nan_trial_fails_as_diverged_without_retry(client: TestClient, engine: Engine,
                                                   workers: Workers) -> None:
    sid = submit(client, n_trials=2, sampler={"name": "grid", "grid_points": 2},
                 search_space={"constant": {"lr": {"low": 0.05, "high": 1e30, "log": True}}})
    workers.start()
    wait_for(lambda: finished(engine, sid), 240, "the study to finish")
    huge, sane = sorted(trials(engine, sid), key=lambda t: -t.params["lr"])
    assert huge.params["lr"] == pytest.approx(1e30) and sane.params["lr"] == pytest.approx(0.05)
    assert huge.state == "failed" and huge.failure_reason.startswith("diverged")
    assert "epoch 0" in huge.failure_reason
    assert sane.state == "complete"
    assert all(j.failures == 0 and j.attempt == 1 for j in jobs(engine, sid))
    assert study_row(engine, sid).status == "succeeded"
    assert client.get(f"/v1/studies/{sid}/trials").status_code == 200  # no NaN in JSON


def test_cancel_stops_the_running_trial_within_an_epoch(client: TestClient, engine: Engine,
                                                        workers: Workers) -> None:
    sid = submit(client, n_trials=3, **LONG)
    workers.start()
    running = wait_for(lambda: running_trial(engine, sid, 2), 120, "a trial to run")
    assert client.post(f"/v1/studies/{sid}/cancel").status_code == 200
    # Each epoch's point and the cancel flag are read in one transaction that locks the job
    # row, as the cancel does: at most the epoch in flight is recorded after this.
    at_cancel = points(engine, running.id)
    wait_for(lambda: all(j.state != "running" for j in jobs(engine, sid)), 60,
             "the running trial to stop")
    [row] = [t for t in trials(engine, sid) if t.slot == running.slot]
    assert row.state == "cancelled"
    assert points(engine, row.id) <= at_cancel + 1  # the epoch in flight, then it stops
    assert len(trials(engine, sid)) == 1  # no other slot started
    study = study_row(engine, sid)
    assert study.status == "cancelled" and study.n_cancelled == 3 and study.n_running == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_terminated_database_connections_are_survived(client: TestClient, engine: Engine,
                                                      workers: Workers) -> None:
    sid = submit(client, n_trials=3, epochs=10, batch_size=16)
    workers.start()
    wait_for(lambda: running_trial(engine, sid, 2), 120, "a trial to run")
    kill = text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    for _ in range(3):  # kill the worker's connections, then wait until it makes progress
        before = total_points(engine, sid)
        with engine.connect() as c:
            assert c.execute(kill).scalar() >= 1
        wait_for(lambda n=before: total_points(engine, sid) > n or finished(engine, sid), 60,
                 "progress after the connections were killed")
    wait_for(lambda: finished(engine, sid), 240, "the study to finish")
    assert study_row(engine, sid).status == "succeeded"
    assert_exactly_n_finished(engine, sid, 3)


def test_sigterm_releases_the_slot_without_a_failed_attempt(
        client: TestClient, engine: Engine, workers: Workers, settings: Settings) -> None:
    sid = submit(client, n_trials=1, **LONG)
    leaving = workers.start(LRSEARCH_GRACE_SECONDS="1")
    victim = wait_for(lambda: running_trial(engine, sid, 1), 120, "the trial to run")
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(timeout=60) == 0
    [job] = jobs(engine, sid)
    assert job.state == "queued" and job.failures == 0  # released, not failed
    workers.start()
    wait_for(lambda: finished(engine, sid), 240, "another worker to finish the slot")
    [row] = trials(engine, sid)
    assert row.state == "complete" and row.params == victim.params
    [job] = jobs(engine, sid)
    assert job.failures == 0 and job.attempt == 2
    assert study_row(engine, sid).n_complete == 1
    released = [t for t in optuna_trials(settings, engine, sid) if t.state == TrialState.FAIL]
    assert [t.user_attrs["lrsearch_failure"] for t in released] == [
        "released: the worker shut down"]


def test_lease_is_several_heartbeats_long() -> None:
    assert LEASE >= 4  # the harness' lease: 4 heartbeats of 1 s


def test_second_signal_stops_at_once_and_releases(client: TestClient, engine: Engine,
                                                  workers: Workers) -> None:
    sid = submit(client, n_trials=1, epochs=60, batch_size=8)  # ~7 s, grace is 30 s
    leaving = workers.start()
    wait_for(lambda: running_trial(engine, sid, 1), 120, "the trial to run")
    leaving.send_signal(signal.SIGTERM)
    wait_for(lambda: "finishing the running job" in workers.log(0), 10, "the first signal")
    leaving.send_signal(signal.SIGTERM)  # (two signals sent back to back would merge)
    assert leaving.wait(timeout=15) == 0  # far sooner than the trial or the grace period
    [job] = jobs(engine, sid)
    assert job.state == "queued" and job.failures == 0
    [row] = trials(engine, sid)
    assert row.state == "queued" and study_row(engine, sid).n_running == 0
    assert "second signal" in workers.log(0)


def test_study_on_an_uploaded_dataset(client: TestClient, engine: Engine,
                                      workers: Workers) -> None:
    import io

    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((300, 4)).astype("float32")
    buffer = io.BytesIO()
    np.savez(buffer, x_train=x, y_train=(x[:, 0] > 0.5).astype("int64"))
    r = client.post("/v1/datasets", data={"name": "halves"},
                    files={"file": ("halves.npz", buffer.getvalue())})
    assert r.status_code == 201, r.text
    sid = submit(client, dataset="halves", n_trials=1)
    workers.start()
    wait_for(lambda: finished(engine, sid), 120, "the study to finish")
    [row] = trials(engine, sid)
    assert row.state == "complete", row.failure_reason


def test_timeout_is_retried_then_failed_with_the_reason(client: TestClient, engine: Engine,
                                                        workers: Workers) -> None:
    sid = submit(client, n_trials=1, **LONG)  # a few seconds; the limit below is 1 s
    workers.start(LRSEARCH_TRIAL_TIMEOUT_SECONDS="1", LRSEARCH_MAX_ATTEMPTS="2")
    wait_for(lambda: finished(engine, sid), 180, "the study to finish")
    [row] = trials(engine, sid)
    assert row.state == "failed" and "timeout after 1 s (attempt 2 of 2)" in row.failure_reason
    [job] = jobs(engine, sid)
    assert job.state == "failed" and job.failures == 2 and job.attempt == 2
    assert study_row(engine, sid).status == "failed"
