"""Restarts lose nothing: stopping and restarting the API process, or restarting PostgreSQL, in
the middle of a running study; it ends with exactly N finished trials and every result
recorded before the restart is still there."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from service import migrations
from service.config import Settings
from service.db import make_engine
from service.main import create_app
from tests.fixtures import TEST_HOSTS
from tests.processes import LRSEARCH, free_port, is_ready
from tests.worker.conftest import (
    Workers,
    finished,
    running_trial,
    study_row,
    submit,
    trials,
    wait_for,
)

N = 4

# Real processes on a 2-core machine: one unexplained wait timeout was seen once in six full
# runs (a worker idle, no trial observed running). A failed attempt is rerun once; the first
# attempt's report, with every job and trial row, still shows in the output as RERUN.
pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)


def snapshot(engine: Engine, study_id: str) -> dict[int, tuple]:
    """The finished trials: slot -> (number, state, value, params)."""
    return {t.slot: (t.number, t.state, t.value, t.params) for t in trials(engine, study_id)
            if t.state in ("complete", "pruned", "failed")}


def assert_nothing_lost(engine: Engine, study_id: str, before: dict[int, tuple]) -> None:
    study = study_row(engine, study_id)
    assert study.status == "succeeded"
    assert study.n_complete + study.n_pruned + study.n_failed == N
    assert study.n_queued == study.n_running == 0
    after = snapshot(engine, study_id)
    assert len(after) == N
    for slot, row in before.items():
        assert after[slot] == row


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_api_restart_mid_study(settings: Settings, engine: Engine, workers: Workers,
                               tmp_path: Path) -> None:
    port = free_port()
    env = {**workers.env, "LRSEARCH_DATABASE_URL": settings.database_url}

    def start_api() -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"api-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([LRSEARCH, "api", "--port", str(port)], env=env,
                                stdout=log, stderr=log)
        wait_for(lambda: is_ready(f"http://127.0.0.1:{port}"), 60, "the API to answer")
        return proc

    api = start_api()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            sid = submit_http(http)
            workers.start()
            workers.start()
            wait_for(lambda: len(snapshot(engine, sid)) >= 1 and running_trial(engine, sid),
                     180, "one trial finished and another running")
            api.terminate()
            # uvicorn shuts down gracefully, then re-raises SIGTERM for the exit status.
            assert api.wait(timeout=30) in (0, -signal.SIGTERM)
            before = snapshot(engine, sid)
            time.sleep(2)  # the workers go on without the API
            api = start_api()
            wait_for(lambda: http.get(f"/v1/studies/{sid}").json()["status"] == "succeeded",
                     240, "the study to finish")
            assert_nothing_lost(engine, sid, before)
            assert http.get(f"/v1/studies/{sid}/best").status_code == 200
    finally:
        api.kill()


def submit_http(http: httpx.Client) -> str:
    r = http.post("/v1/studies", json={
        "family": "constant", "dataset": "digits", "epochs": 20, "batch_size": 16,
        "n_trials": N, "pruner": {"name": "none"},
        "search_space": {"constant": {"lr": {"low": 0.02, "high": 0.2, "log": True}}}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


class PrivatePostgres:
    """A PostgreSQL server of our own (initdb in a temporary folder), so restarting it does not
    touch anyone else's. As root, the server runs as the `postgres` user."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [
            shutil.which("initdb") or ""]
        if not found[-1]:
            pytest.fail("PostgreSQL's initdb is not installed")
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="lrsearch-pg-"))
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            os.chown(self.dir, pwd.getpwnam(self.user).pw_uid, -1)
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres",
                  "--no-sync")
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off", "start")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        # No pipes: the server inherits them, and would keep them open for its whole life.
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-m",
                  "fast", "-w", "restart")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    yield server
    server.stop()


# It brings its own server; the `database_url` parameter (which the worker fixtures carry) only
# needs one value.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_postgres_restart_mid_study(private_postgres: PrivatePostgres, tmp_path: Path,
                                    workers: Workers) -> None:
    settings = Settings(database_url=private_postgres.url, data_dir=tmp_path / "data",
                        allowed_hosts=TEST_HOSTS)
    engine = make_engine(settings.database_url)
    migrations.migrate(settings, engine)
    workers.env["LRSEARCH_DATABASE_URL"] = settings.database_url
    workers.env["LRSEARCH_DATA_DIR"] = str(settings.data_dir)
    try:
        with TestClient(create_app(settings)) as client:
            sid = submit(client, n_trials=N, epochs=20, batch_size=16)
            workers.start()
            workers.start()
            wait_for(lambda: len(snapshot(engine, sid)) >= 1 and running_trial(engine, sid),
                     180, "one trial finished and another running")
            before = snapshot(engine, sid)
            private_postgres.restart()
            wait_for(lambda: finished(engine, sid), 300, "the study to finish")
            assert_nothing_lost(engine, sid, before)
            assert client.get(f"/v1/studies/{sid}/best").status_code == 200
    finally:
        engine.dispose()
