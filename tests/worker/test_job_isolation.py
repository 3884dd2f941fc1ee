"""No job's training lands in another job, black-box against a real `lrsearch serve` with one
worker.

Each epoch boundary is held open for a moment (LRSEARCH_FAULT_EPOCH_PAUSE_SECONDS: the worker
waits before writing the epoch, while the child waits for its reply), so the tests act at a
boundary on purpose instead of hoping to hit one: the study is deleted, or its lease taken
away, exactly while the worker is about to write. Before the fix, the worker gave the job up
there without stopping its child, and the child took the next job's task for its "go on":
the next study ended "succeeded" with the abandoned study's epochs, LR and steps per epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from service.db import make_engine, utcnow
from service.jobs.models import Job
from tests.processes import LRSEARCH, free_port, wait_ready

TRAIN_SAMPLES = 1438  # digits' training split
PAUSE = 1.5

pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)


def constant_study(lr: float, epochs: int, batch_size: int) -> dict[str, Any]:
    return {"family": "constant", "dataset": "digits", "epochs": epochs,
            "batch_size": batch_size, "n_trials": 1, "pruner": {"name": "none"},
            "search_space": {"constant": {"lr": {"value": lr}}}}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[httpx.Client]:
    """`lrsearch serve --workers 1` in tmp_path (SQLite), with short leases and held epoch
    boundaries."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", LRSEARCH_POLL_SECONDS="0.2",
               LRSEARCH_LEASE_SECONDS="4", LRSEARCH_HEARTBEAT_SECONDS="1",
               LRSEARCH_FAULT_EPOCH_PAUSE_SECONDS=str(PAUSE))
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen([LRSEARCH, "serve", "--port", str(port), "--workers", "1"],
                            cwd=tmp_path, env=env, stdout=log, stderr=log,
                            start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log_path, timeout=90)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http
    except BaseException:
        print(log_path.read_text(errors="replace")[-6000:])
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def submit(http: httpx.Client, body: dict[str, Any]) -> str:
    r = http.post("/v1/studies", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait(http: httpx.Client, study_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study: dict[str, Any] = http.get(f"/v1/studies/{study_id}").json()
        if study["status"] in ("succeeded", "failed", "cancelled"):
            return study
        time.sleep(0.3)
    raise AssertionError(f"study {study_id} did not finish in {timeout}s")


def history_points(http: httpx.Client, study_id: str) -> int:
    trials = http.get(f"/v1/studies/{study_id}/trials").json()["items"]
    running = [t for t in trials if t["state"] == "running" and t["number"] is not None]
    if not running:
        return 0
    trial = http.get(f"/v1/studies/{study_id}/trials/{running[0]['number']}").json()
    return len(trial["history"])


def wait_for_points(http: httpx.Client, study_id: str, n: int) -> None:
    """Until the study's running trial has n epochs written: the worker is then within the
    pause before epoch n's write, for PAUSE seconds."""
    deadline = time.monotonic() + 120
    while history_points(http, study_id) < n:
        assert time.monotonic() < deadline, "the trial did not reach its epochs"
        time.sleep(0.05)


def assert_own_curve(http: httpx.Client, tmp_path: Path, study_id: str, lr: float,
                     epochs: int, batch_size: int) -> None:
    """The study's final trial has exactly its own epochs, LR and steps per epoch, and its
    Optuna trial has exactly its own intermediate values."""
    study = http.get(f"/v1/studies/{study_id}").json()
    assert study["status"] == "succeeded", study
    trials = http.get(f"/v1/studies/{study_id}/trials").json()["items"]
    assert len(trials) == 1 and trials[0]["state"] == "complete", trials
    trial = http.get(f"/v1/studies/{study_id}/trials/{trials[0]['number']}").json()
    assert trial["params"] == {"lr": lr}
    assert trial["steps_per_epoch"] == math.ceil(TRAIN_SAMPLES / batch_size)
    history = trial["history"]
    assert [h["epoch"] for h in history] == list(range(epochs))
    assert all(math.isclose(h["lr_first"], lr, rel_tol=1e-6) for h in history), history
    assert all(math.isclose(h["lr_last"], lr, rel_tol=1e-6) for h in history), history
    storage = f"sqlite:///{tmp_path}/.lrsearch/optuna.db"
    ours = optuna.load_study(study_name=study["optuna_study_name"], storage=storage)
    final = next(t for t in ours.trials if t.number == trial["number"])
    assert final.state == optuna.trial.TrialState.COMPLETE
    assert final.intermediate_values == {h["epoch"]: h["val_metric"] for h in history}
    assert final.value == trial["value"] == history[-1]["val_metric"]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in ours.trials) == 1


def test_a_study_deleted_mid_epoch_never_trains_into_the_next_study(
        serve: httpx.Client, tmp_path: Path) -> None:
    first = submit(serve, constant_study(0.011, epochs=200, batch_size=512))
    wait_for_points(serve, first, 2)
    # Inside the held boundary: cancel and delete before the worker writes the epoch.
    assert serve.post(f"/v1/studies/{first}/cancel").status_code == 200
    assert serve.delete(f"/v1/studies/{first}").status_code == 204
    second = submit(serve, constant_study(0.0022, epochs=3, batch_size=256))
    wait(serve, second)
    assert_own_curve(serve, tmp_path, second, 0.0022, epochs=3, batch_size=256)
    storage = f"sqlite:///{tmp_path}/.lrsearch/optuna.db"
    assert all(not name.endswith(first) for name in optuna.get_all_study_names(storage))


def test_a_lease_lost_at_an_epoch_boundary_stops_the_child(serve: httpx.Client,
                                                           tmp_path: Path) -> None:
    first = submit(serve, constant_study(0.011, epochs=6, batch_size=512))
    wait_for_points(serve, first, 2)
    # Inside the held boundary, the lease runs out (as if the worker had stalled past it):
    # the worker's write at this boundary fails its fence; the reaper queues the slot again.
    engine = make_engine(f"sqlite:///{tmp_path}/.lrsearch/lrsearch.db")
    try:
        with Session(engine) as s, s.begin():
            s.execute(update(Job).where(Job.study_id == first)
                      .values(lease_expires_at=utcnow() - timedelta(hours=1)))
    finally:
        engine.dispose()
    second = submit(serve, constant_study(0.0022, epochs=3, batch_size=256))
    wait(serve, first)
    wait(serve, second)
    assert_own_curve(serve, tmp_path, first, 0.011, epochs=6, batch_size=512)
    assert_own_curve(serve, tmp_path, second, 0.0022, epochs=3, batch_size=256)
    trial = serve.get(f"/v1/studies/{first}/trials").json()["items"][0]
    assert trial["attempt"] == 2  # the lost attempt was retried from its first epoch
