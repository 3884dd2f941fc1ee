"""Worker test harness: real `python -m worker` processes against a real database, short
leases so that recovery happens in seconds, and tiny trials on digits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.config import Settings
from service.jobs.models import Job
from service.studies.models import CurvePoint, Study, Trial

LEASE = 4.0


@pytest.fixture
def worker_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "LRSEARCH_DATABASE_URL": settings.database_url,
            "LRSEARCH_DATA_DIR": str(settings.data_dir), "LRSEARCH_LEASE_SECONDS": str(LEASE),
            "LRSEARCH_HEARTBEAT_SECONDS": "1", "LRSEARCH_POLL_SECONDS": "0.2",
            "LRSEARCH_GRACE_SECONDS": "30", "LRSEARCH_MAX_ATTEMPTS": "3",
            "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}


class Workers:
    """Starts worker processes; stops whatever is left at the end of the test."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, []  # type: ignore[var-annotated]

    def start(self, command: list[str] | None = None, **extra_env: str
              ) -> subprocess.Popen[bytes]:
        """A worker: `python -m worker`, or `command`, with the harness's environment."""
        log = open(self.logs / f"worker{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(command or [sys.executable, "-m", "worker"], stdout=log,
                                stderr=log, env={**self.env, **extra_env})
        self.procs.append(proc)
        return proc

    def log(self, i: int) -> str:
        return (self.logs / f"worker{i}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=30)


@pytest.fixture
def workers(worker_env: dict[str, str], tmp_path: Path,
            request: pytest.FixtureRequest) -> Iterator[Workers]:
    w = Workers(worker_env, tmp_path)
    yield w
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.outcome in ("failed", "rerun"):  # where was each worker
        for p in w.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGUSR1)
        time.sleep(1)
        for i in range(len(w.procs)):
            sys.__stderr__.write(f"--- worker{i}.log ---\n{w.log(i)[-6000:]}\n")
    w.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


DIAGNOSE: list[Callable[[], str]] = []  # what a timeout prints: set by the `engine` users


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    state = "\n".join(d() for d in DIAGNOSE)
    message = f"timed out after {timeout}s waiting for {what}\n{state}"
    # Straight to the real stderr: a failure that is rerun is not reported with its details.
    sys.__stderr__.write(f"\n[worker test] {message}\n")
    raise AssertionError(message)


def describe_database(engine: Engine) -> str:
    """Every job and trial row, with failure reasons: what a timed-out wait was up against."""
    with Session(engine) as s:
        rows = [f"job {j.id} {j.kind} slot={j.slot} state={j.state} attempt={j.attempt} "
                f"failures={j.failures} owner={j.lease_owner} error={j.last_error}"
                for j in s.scalars(select(Job).order_by(Job.id))]
        rows += [f"trial slot={t.slot} state={t.state} attempt={t.attempt} "
                 f"reason={(t.failure_reason or '')[:300]}"
                 for t in s.scalars(select(Trial).order_by(Trial.slot))]
    return "\n".join(rows)


@pytest.fixture(autouse=True)
def _diagnose(request: pytest.FixtureRequest) -> Iterator[None]:
    if "engine" in request.fixturenames:
        engine = request.getfixturevalue("engine")
        DIAGNOSE.append(lambda: describe_database(engine))
    yield
    DIAGNOSE.clear()


def study_row(engine: Engine, study_id: str) -> Study:
    with Session(engine) as s:
        study = s.get(Study, study_id)
        assert study is not None
        return study


def trials(engine: Engine, study_id: str) -> list[Trial]:
    with Session(engine) as s:
        return list(s.scalars(select(Trial).where(Trial.study_id == study_id)
                              .order_by(Trial.slot)))


def jobs(engine: Engine, study_id: str) -> list[Job]:
    with Session(engine) as s:
        return list(s.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.slot)))


def points(engine: Engine, trial_id: int) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(CurvePoint)
                        .where(CurvePoint.trial_id == trial_id)) or 0


def running_trial(engine: Engine, study_id: str, min_points: int = 1) -> Trial | None:
    """A running trial with at least `min_points` epochs recorded."""
    for t in trials(engine, study_id):
        if t.state == "running" and points(engine, t.id) >= min_points:
            return t
    return None


def finished(engine: Engine, study_id: str) -> bool:
    return study_row(engine, study_id).status in ("succeeded", "failed", "cancelled")


def submit(client: TestClient, **overrides: Any) -> str:
    body = {"family": "constant", "dataset": "digits", "epochs": 3, "batch_size": 64,
            "n_trials": 2, "pruner": {"name": "none"},
            "search_space": {"constant": {"lr": {"low": 0.02, "high": 0.2, "log": True}}},
            **overrides}
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def optuna_trials(settings: Settings, engine: Engine, study_id: str) -> list[Any]:
    import optuna

    name = study_row(engine, study_id).optuna_study_name
    return optuna.load_study(study_name=name, storage=settings.optuna_url()).trials


def pid_of(worker_name: str | None) -> int:
    assert worker_name is not None
    return int(worker_name.split(":")[1])
