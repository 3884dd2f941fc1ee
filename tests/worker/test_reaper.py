"""`lrsearch reaper`, the process `lrsearch serve` runs beside its workers: a job whose worker
died goes back to the queue even when no worker is alive, and SIGTERM stops the reaper."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.jobs import ops
from tests.processes import LRSEARCH
from tests.worker.conftest import jobs, submit, wait_for


def test_the_reaper_requeues_a_lost_lease_with_no_worker_alive(
        client: TestClient, engine: Engine, worker_env: dict[str, str], tmp_path: Path) -> None:
    sid = submit(client, n_trials=1)
    with Session(engine) as s, s.begin():
        claim = ops.claim(s, "ghost", 1.0)  # a worker that claims, then is never heard of
    assert claim is not None and claim.study_id == sid
    log = open(tmp_path / "reaper.log", "wb")  # noqa: SIM115
    reaper = subprocess.Popen([LRSEARCH, "reaper"], env=worker_env, stdout=log, stderr=log)
    try:
        job = wait_for(lambda: next((j for j in jobs(engine, sid) if j.state == "queued"), None),
                       60, "the reaper to put the lost job back in the queue")
        assert job.failures == 1 and job.lease_owner is None
        assert job.last_error == "lost worker: lease of ghost expired"
        reaper.send_signal(signal.SIGTERM)
        assert reaper.wait(timeout=30) == 0
    finally:
        if reaper.poll() is None:
            reaper.kill()
            reaper.wait(timeout=30)
    output = (tmp_path / "reaper.log").read_text()
    assert f"job {claim.job_id} attempt 1 lost its lease (owner ghost)" in output, output
    assert "Traceback" not in output, output


def test_a_reaper_of_another_release_leaves_leases_alone_until_the_schema_is_its_own(
        client: TestClient, engine: Engine, worker_env: dict[str, str], tmp_path: Path) -> None:
    from sqlalchemy import text

    from service import migrations

    head = migrations.head()
    sid = submit(client, n_trials=1)
    with Session(engine) as s, s.begin():
        claim = ops.claim(s, "ghost", 1.0)
    assert claim is not None and claim.study_id == sid

    def stamp(revision: str) -> None:
        with engine.begin() as c:
            c.execute(text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = :r"),
                      {"r": revision})

    stamp("9999_from_a_newer_release")
    log_path = tmp_path / "reaper.log"
    log = open(log_path, "wb")  # noqa: SIM115
    reaper = subprocess.Popen([LRSEARCH, "reaper"], env=worker_env, stdout=log, stderr=log)
    try:
        wait_for(lambda: "reaper is idle: found database schema revision "
                 f"9999_from_a_newer_release, this code expects {head}" in log_path.read_text(),
                 60, "the reaper to say why it is idle")
        time.sleep(3.0)  # several passes with the ghost's lease long expired
        assert [j.state for j in jobs(engine, sid)] == ["running"]
        stamp(head)
        wait_for(lambda: next((j for j in jobs(engine, sid) if j.state == "queued"), None),
                 60, "the reaper, its schema back, to requeue the lost job")
        reaper.send_signal(signal.SIGTERM)
        assert reaper.wait(timeout=30) == 0
    finally:
        if reaper.poll() is None:
            reaper.kill()
            reaper.wait(timeout=30)
    assert "Traceback" not in log_path.read_text()
