"""Claims take turns across tenants, and leases run on the database's clock."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.auth import ops as auth
from service.config import Settings
from service.jobs import ops as jobs
from service.jobs.models import Job
from service.main import create_app
from tests.worker.conftest import (
    Workers,
    finished,
    study_row,
    submit,
    trials,
    wait_for,
)
from tests.worker.conftest import (
    jobs as jobs_of,
)

pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)
needs_faketime = pytest.mark.skipif(shutil.which("faketime") is None,
                                    reason="Debian's faketime is not installed (.ci/run "
                                    "installs it)")


@pytest.fixture
def tenants(settings: Settings, engine: Engine) -> Iterator[dict[str, TestClient]]:
    """One client per tenant (alpha, beta, gamma), each with its own API key; up to 500
    trials a study."""
    keys = {}
    with Session(engine) as s, s.begin():
        for tenant in ("alpha", "beta", "gamma"):
            keys[tenant] = auth.create(s, tenant)[1]
    app = create_app(settings.model_copy(update={"max_trials": 500}))
    with TestClient(app) as base:
        yield {t: TestClient(app, headers={"Authorization": f"Bearer {k}"})
               for t, k in keys.items()} | {"_": base}


def claim_order(engine: Engine, n: int) -> list[str]:
    """The tenants of the next n claims, each job finished before the next claim (one
    worker)."""
    order = []
    for _ in range(n):
        with Session(engine) as s, s.begin():
            c = jobs.claim(s, "w", 60)
            assert c is not None
            order.append(s.get(Job, c.job_id).tenant)  # type: ignore[union-attr]
            jobs.finish(s, c, "done")
    return order


def test_claims_take_turns_across_tenants(tenants: dict[str, TestClient],
                                          engine: Engine) -> None:
    submit(tenants["alpha"], n_trials=5)
    submit(tenants["beta"], n_trials=2)
    submit(tenants["gamma"], n_trials=1)
    assert claim_order(engine, 8) == ["alpha", "beta", "gamma", "alpha", "beta", "alpha",
                                      "alpha", "alpha"]
    with Session(engine) as s:
        assert s.scalar(select(Job).where(Job.state == "queued")) is None


def test_a_tenant_with_one_trial_is_not_starved_by_one_with_200(
        tenants: dict[str, TestClient], engine: Engine, workers: Workers) -> None:
    big = submit(tenants["alpha"], n_trials=200, epochs=1, batch_size=512)
    small = submit(tenants["beta"], n_trials=1, epochs=1, batch_size=512)
    workers.start()
    wait_for(lambda: finished(engine, small), 180, "the small tenant's study to finish")
    assert tenants["alpha"].post(f"/v1/studies/{big}/cancel").status_code == 200
    started = trials(engine, small)[0].started_at
    before = [t for t in trials(engine, big) if t.started_at is not None
              and t.started_at < started]
    assert len(before) < 2, f"{len(before)} of the big study's trials started first"


def start_with_clock(env: dict[str, str], logs: Path, offset: str, name: str
                     ) -> subprocess.Popen[bytes]:
    """A worker whose host clock is `offset` (e.g. "+3h") off, under libfaketime."""
    log = open(logs / f"{name}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(["faketime", "-f", offset, sys.executable, "-m", "worker"],
                            stdout=log, stderr=log,
                            env={**env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"})


# SQLite lives on one host, whose clock every process shares: a worker on another clock
# cannot reach it. The database clock matters where workers on many machines share a server.
@needs_faketime
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_workers_hours_off_neither_lose_their_lease_nor_take_a_live_one(
        client: TestClient, engine: Engine, worker_env: dict[str, str],
        tmp_path: Path) -> None:
    sid = submit(client, n_trials=4, epochs=8, batch_size=32)
    ahead = start_with_clock(worker_env, tmp_path, "+3h", "ahead")
    behind = start_with_clock(worker_env, tmp_path, "-3h", "behind")
    try:
        wait_for(lambda: finished(engine, sid), 300, "the study to finish")
    finally:
        for p in (ahead, behind):
            p.kill()
            p.wait(timeout=30)
    logs = "".join((tmp_path / f"{n}.log").read_text(errors="replace")
                   for n in ("ahead", "behind"))
    assert study_row(engine, sid).status == "succeeded", logs[-4000:]
    assert [(j.state, j.attempt, j.failures) for j in jobs_of(engine, sid)] == \
        [("done", 1, 0)] * 4, logs[-4000:]
    assert "lease lost" not in logs and "lost its lease" not in logs
    names = {t.worker for t in trials(engine, sid) if t.worker}
    assert len(names) == 2  # both clocks held leases


@needs_faketime
def test_faketime_really_moves_the_clock(tmp_path: Path) -> None:
    """The test above means something only if faketime shifts what Python reads."""
    out = subprocess.run(["faketime", "-f", "+3h", sys.executable, "-c",
                          "import time; print(time.time())"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    import time

    assert float(out.stdout) - time.time() == pytest.approx(3 * 3600, abs=60)
