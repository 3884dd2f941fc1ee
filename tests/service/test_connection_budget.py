"""The connection budget (README): on PostgreSQL, an API process holds at most
LRSEARCH_DB_POOL_SIZE + LRSEARCH_DB_MAX_OVERFLOW connections and a worker at most
worker.loop.WORKER_CONNECTIONS, each named by its role (application_name), so the total is at
most api_processes * (pool + overflow) + workers * WORKER_CONNECTIONS. Counted from
pg_stat_activity while an API process serves 32 concurrent clients and two workers train."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from service.config import Settings
from service.db import postgres_connect_args
from tests.fixtures import PG_URL
from tests.processes import LRSEARCH, free_port, wait_ready
from tests.worker.conftest import Workers, finished, study_row, wait_for
from worker.loop import APPLICATION_NAME as WORKER_NAME
from worker.loop import WORKER_CONNECTIONS

API_NAME = "lrsearch-api"
POOL, OVERFLOW, WORKERS, CLIENTS = 3, 1, 2, 32


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_connections_stay_within_the_budget(settings: Settings, engine: Engine,
                                            tmp_path: Path) -> None:
    import subprocess

    assert PG_URL
    # The `engine` fixture's migration left Optuna's storage, unnamed, holding connections
    # until it is collected: not this test's to count.
    gc.collect()
    database = make_url(settings.database_url).database
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.update(LRSEARCH_DATABASE_URL=settings.database_url,
               LRSEARCH_DATA_DIR=str(settings.data_dir), LRSEARCH_DB_POOL_SIZE=str(POOL),
               LRSEARCH_DB_MAX_OVERFLOW=str(OVERFLOW), LRSEARCH_LEASE_SECONDS="10",
               LRSEARCH_HEARTBEAT_SECONDS="1", LRSEARCH_POLL_SECONDS="0.2",
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    # The probe counts from the server's maintenance database, under its own name.
    probe = create_engine(PG_URL, connect_args=postgres_connect_args("lrsearch-test-probe"))
    seen: Counter[str] = Counter()  # the most connections of each role at one time
    others: set[str] = set()
    stop = threading.Event()

    def sample() -> None:
        with probe.connect() as c:
            while not stop.is_set():
                rows = c.execute(text("SELECT application_name, count(*) FROM "
                                      "pg_stat_activity WHERE datname = :db AND "
                                      "backend_type = 'client backend' GROUP BY 1"),
                                 {"db": database}).all()
                now = {name: n for name, n in rows}
                for name, n in now.items():
                    seen[name] = max(seen[name], n)
                    if name not in (API_NAME, WORKER_NAME, "lrsearch"):
                        others.add(name)
                seen["total"] = max(seen["total"], sum(now.get(k, 0)
                                                       for k in (API_NAME, WORKER_NAME)))
                c.commit()
                time.sleep(0.05)

    port, log = free_port(), tmp_path / "api.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        api = subprocess.Popen([LRSEARCH, "api", "--port", str(port)], env=env, stdout=out,
                               stderr=out)
    workers = Workers(env, tmp_path)
    sampler = threading.Thread(target=sample)
    try:
        wait_ready(url, api, log)
        sampler.start()
        r = httpx.post(f"{url}/v1/studies", timeout=30, json={
            "family": "constant", "dataset": "digits", "epochs": 2, "batch_size": 64,
            "n_trials": 4, "pruner": {"name": "none"},
            "search_space": {"constant": {"lr": {"low": 0.02, "high": 0.2, "log": True}}}})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        for _ in range(WORKERS):
            workers.start()
        codes: list[int] = []
        done = threading.Event()

        def poll() -> None:  # every client polls the study until it finishes
            with httpx.Client(base_url=url, timeout=60) as http:
                while not done.is_set():
                    codes.append(http.get(f"/v1/studies/{sid}").status_code)
                    codes.append(http.get(f"/v1/studies/{sid}/trials").status_code)

        clients = [threading.Thread(target=poll) for _ in range(CLIENTS)]
        for t in clients:
            t.start()
        try:
            wait_for(lambda: finished(engine, sid), 300, "the study to finish")
        finally:
            done.set()
        for t in clients:
            t.join(timeout=60)
        assert study_row(engine, sid).status == "succeeded"
        assert codes and set(codes) == {200}, Counter(codes)
    finally:
        stop.set()
        if sampler.is_alive():
            sampler.join(timeout=10)
        workers.stop_all()
        api.terminate()
        api.wait(timeout=30)
        probe.dispose()
    budget = 1 * (POOL + OVERFLOW) + WORKERS * WORKER_CONNECTIONS
    print(f"most connections at once: {dict(seen)}; budget {budget}")
    assert not others, f"connections without a role: {others}"
    assert 1 <= seen[API_NAME] <= POOL + OVERFLOW, seen
    assert WORKERS <= seen[WORKER_NAME] <= WORKERS * WORKER_CONNECTIONS, seen
    assert seen["total"] <= budget, seen
