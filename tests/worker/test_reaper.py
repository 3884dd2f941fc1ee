"""`lrsearch reaper`, the process `lrsearch serve` runs beside its workers: a job whose worker
died goes back to the queue even when no worker is alive, and SIGTERM stops the reaper."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service import migrations
from service.jobs import ops
from tests.processes import LRSEARCH
from tests.worker.conftest import jobs, submit, wait_for
from tests.worker.test_schema_revision import FUTURE, stamp


@contextmanager
def running_reaper(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`lrsearch reaper` writing to `log_path`; killed on the way out if still running."""
    with open(log_path, "wb") as log:
        reaper = subprocess.Popen([LRSEARCH, "reaper"], env=env, stdout=log, stderr=log)
        try:
            yield reaper
        finally:
            if reaper.poll() is None:
                reaper.kill()
                reaper.wait(timeout=30)


def ghost_claim(client: TestClient, engine: Engine) -> tuple[str, ops.Claim]:
    """A one-trial study whose job a worker claimed with a 1 s lease and was never heard of
    again: (study id, the claim)."""
    sid = submit(client, n_trials=1)
    with Session(engine) as s, s.begin():
        claim = ops.claim(s, "ghost", 1.0)
    assert claim is not None and claim.study_id == sid
    return sid, claim


def test_the_reaper_requeues_a_lost_lease_with_no_worker_alive(
        client: TestClient, engine: Engine, worker_env: dict[str, str], tmp_path: Path) -> None:
    sid, claim = ghost_claim(client, engine)
    with running_reaper(worker_env, tmp_path / "reaper.log") as reaper:
        job = wait_for(lambda: next((j for j in jobs(engine, sid) if j.state == "queued"), None),
                       60, "the reaper to put the lost job back in the queue")
        assert job.failures == 1 and job.lease_owner is None
        assert job.last_error == "lost worker: lease of ghost expired"
        reaper.send_signal(signal.SIGTERM)
        assert reaper.wait(timeout=30) == 0
    output = (tmp_path / "reaper.log").read_text()
    assert f"job {claim.job_id} attempt 1 lost its lease (owner ghost)" in output, output
    assert "Traceback" not in output, output


def test_a_reaper_of_another_release_leaves_leases_alone_until_the_schema_is_its_own(
        client: TestClient, engine: Engine, worker_env: dict[str, str], tmp_path: Path) -> None:
    head = migrations.head()
    sid, _ = ghost_claim(client, engine)
    stamp(engine, FUTURE)
    log_path = tmp_path / "reaper.log"
    with running_reaper(worker_env, log_path) as reaper:
        wait_for(lambda: "reaper is idle: found database schema revision "
                 f"{FUTURE}, this code expects {head}" in log_path.read_text(),
                 60, "the reaper to say why it is idle")
        time.sleep(3.0)  # several passes with the ghost's lease long expired
        assert [j.state for j in jobs(engine, sid)] == ["running"]
        stamp(engine, head)
        wait_for(lambda: next((j for j in jobs(engine, sid) if j.state == "queued"), None),
                 60, "the reaper, its schema back, to requeue the lost job")
        reaper.send_signal(signal.SIGTERM)
        assert reaper.wait(timeout=30) == 0
    assert "Traceback" not in log_path.read_text()
