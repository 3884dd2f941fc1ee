"""`lrsearch reaper`, the process `lrsearch serve` runs beside its workers: a job whose worker
died goes back to the queue even when no worker is alive, and SIGTERM stops the reaper."""

from __future__ import annotations

import signal
import subprocess
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
