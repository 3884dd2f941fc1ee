"""Concurrent requests against a real `lrsearch api` process, on SQLite and PostgreSQL.

Six identical POSTs racing with one Idempotency-Key once gave one 201 and five 500s (the
unique key on (tenant, idempotency_key) was violated and nothing caught it), and the
active-study limit was a count followed by an insert that racing requests both passed. Now
every racer gets the one resource, and the limits hold under races. Each test works as its
own tenant (an API key of its own), so the limits of one test do not touch another's."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from lrsearch.client import Client, ClientError
from service.auth import ops as auth
from service.db import make_engine
from service.errors import Conflict
from service.jobs.models import Job
from service.range_tests.models import RangeTest
from service.requests import insert_once, request_hash
from service.studies.models import Study
from tests.fixtures import PG_URL
from tests.processes import LRSEARCH, free_port, wait_ready

LIMIT = 3  # LRSEARCH_MAX_ACTIVE_STUDIES and LRSEARCH_MAX_ACTIVE_RANGE_TESTS of the server
STUDY = {"family": "cosine", "dataset": "digits", "epochs": 2, "n_trials": 3}
RANGE_TEST = {"dataset": "digits", "min_lr": 1e-5, "max_lr": 1.0, "num_iter": 30}


@dataclass
class Api:
    url: str
    engine: Engine  # the server's database, to check what it stored
    env: dict[str, str]  # a client process's environment (LRSEARCH_URL)

    def tenant(self) -> tuple[str, dict[str, str]]:
        """A new tenant and the Authorization header of its key."""
        name = f"t-{uuid.uuid4().hex[:10]}"
        with Session(self.engine) as s, s.begin():
            _, key = auth.create(s, name)
        return name, {"Authorization": f"Bearer {key}"}


def _postgres_database() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("LRSEARCH_TEST_POSTGRES_URL is not set (CI sets it)")
    name = f"lrsearch_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Api]:
    """`lrsearch migrate`, then `lrsearch api` (no worker: everything stays queued)."""
    folder = tmp_path_factory.mktemp(f"race-{request.param}")
    databases = _postgres_database() if request.param == "postgresql" else None
    url = next(databases) if databases else f"sqlite:///{folder}/db/lrsearch.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.update(LRSEARCH_DATABASE_URL=url, LRSEARCH_DATA_DIR=str(folder / "data"),
               LRSEARCH_MAX_ACTIVE_STUDIES=str(LIMIT),
               LRSEARCH_MAX_ACTIVE_RANGE_TESTS=str(LIMIT))
    migrated = subprocess.run([LRSEARCH, "migrate"], env=env, capture_output=True, text=True,
                              timeout=180)
    assert migrated.returncode == 0, migrated.stderr
    port, log = free_port(), folder / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([LRSEARCH, "api", "--port", str(port)], env=env, stdout=out,
                                stderr=out)
    engine = make_engine(url)
    base = f"http://127.0.0.1:{port}"
    client_env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    try:
        wait_ready(base, proc, log)
        yield Api(base, engine, {**client_env, "LRSEARCH_URL": base})
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-8000:]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        engine.dispose()
        if databases:
            next(databases, None)  # drops the database


def race(url: str, n: int, send: Callable[[httpx.Client, int], httpx.Response]
         ) -> list[httpx.Response]:
    """`n` threads, each with its own connection already open, released at once by a barrier."""
    barrier = threading.Barrier(n)
    responses: list[httpx.Response | None] = [None] * n

    def one(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            http.get("/healthz")  # connect before the barrier, so the POSTs start together
            barrier.wait()
            responses[i] = send(http, i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in responses)
    return [r for r in responses if r is not None]


def rows(engine: Engine, model: Any, tenant: str) -> list[Any]:
    with Session(engine) as s:
        return list(s.scalars(select(model).where(model.tenant == tenant)))


def jobs(engine: Engine, **where: str) -> int:
    with Session(engine) as s:
        query = select(func.count()).select_from(Job).filter_by(**where)
        return s.scalar(query) or 0


@pytest.mark.parametrize("path,body,model,key", [
    ("/v1/studies", STUDY, Study, "study_id"),
    ("/v1/range-tests", RANGE_TEST, RangeTest, "range_test_id"),
])
def test_six_racing_retries_with_one_key_all_get_the_one_resource(
        api: Api, path: str, body: dict[str, Any], model: Any, key: str) -> None:
    tenant, auth_header = api.tenant()
    headers = {**auth_header, "Idempotency-Key": "same-key"}
    responses = race(api.url, 6, lambda http, _: http.post(path, json=body, headers=headers))
    assert [r.status_code for r in responses if r.status_code not in (200, 201)] == [], \
        [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    stored = rows(api.engine, model, tenant)
    assert [row.id for row in stored] == list(ids)
    # one job per slot: 3 search trials and the constant-LR baseline's default 2
    assert jobs(api.engine, **{key: stored[0].id}) == (STUDY["n_trials"] + 2 if model is Study
                                                        else 1)
    other = httpx.post(api.url + path, json={**body, "dataset": "synthetic_argmax"},
                       headers=headers)
    assert other.status_code == 409 and other.json()["field"] == "Idempotency-Key"


@pytest.mark.parametrize("path,body,model,setting", [
    ("/v1/studies", STUDY, Study, "LRSEARCH_MAX_ACTIVE_STUDIES"),
    ("/v1/range-tests", RANGE_TEST, RangeTest, "LRSEARCH_MAX_ACTIVE_RANGE_TESTS"),
])
def test_racing_submissions_cannot_exceed_the_active_limit(
        api: Api, path: str, body: dict[str, Any], model: Any, setting: str) -> None:
    tenant, headers = api.tenant()
    responses = race(api.url, 8, lambda http, i: http.post(path, json={**body, "seed": i},
                                                           headers=headers))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == Counter({201: LIMIT, 429: 8 - LIMIT}), [r.text for r in responses]
    refused = next(r.json() for r in responses if r.status_code == 429)
    assert f"{setting}={LIMIT}" in refused["detail"] and refused["field"] == "tenant"
    stored = rows(api.engine, model, tenant)
    assert len(stored) == LIMIT and all(row.status == "queued" for row in stored)
    # Another tenant is not held back by this one's limit.
    _, others = api.tenant()
    assert httpx.post(api.url + path, json=body, headers=others).status_code == 201


def test_client_and_cli_cancel_and_delete_a_range_test(api: Api) -> None:
    tenant, headers = api.tenant()
    key = headers["Authorization"].removeprefix("Bearer ")
    env = {**api.env, "LRSEARCH_API_KEY": key}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LRSEARCH, "range-test", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    with Client(api.url, key) as client:
        first = client.range_test(RANGE_TEST)["id"]
        assert client.cancel_range_test(first)["status"] == "cancelled"
        with pytest.raises(ClientError) as refused:
            client.cancel_range_test(first)
        assert refused.value.status == 409 and refused.value.field == "status"
        client.delete_range_test(first)
        assert [t["id"] for t in client.range_tests()["items"]] == []

        second = client.range_test(RANGE_TEST)["id"]
        early = cli("delete", second)
        assert early.returncode != 0 and "cancel it before deleting" in early.stderr
        cancelled = cli("cancel", second)
        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout.strip() == f"range test {second} cancelled"
        deleted = cli("delete", second)
        assert deleted.returncode == 0 and deleted.stdout.strip() == \
            f"deleted range test {second}"
        with pytest.raises(ClientError) as gone:
            client.get_range_test(second)
        assert gone.value.status == 404
    assert rows(api.engine, RangeTest, tenant) == []
    assert jobs(api.engine, range_test_id=second) == 0


def test_a_lost_insert_race_returns_the_winner(engine: Engine) -> None:
    """The last line of defence, for a request that passed its look-up before another with
    the same key committed: the unique violation surfaces at the flush inside a SAVEPOINT,
    and the winner's row is returned (409 for another body), with this transaction usable."""
    digest = request_hash(RANGE_TEST)

    def row() -> RangeTest:
        return RangeTest(id=uuid.uuid4().hex, tenant="local", status="queued",
                         request=RANGE_TEST, idempotency_key="k", request_hash=digest)

    with Session(engine) as s, s.begin():
        winner = insert_once(s, RangeTest, "local", "k", digest, row()).id
    with Session(engine) as s, s.begin():
        found = insert_once(s, RangeTest, "local", "k", digest, row())
        assert found.id == winner
        assert s.scalar(select(func.count()).select_from(RangeTest)) == 1  # still usable
    with Session(engine) as s, s.begin(), pytest.raises(Conflict, match="Idempotency-Key"):
        insert_once(s, RangeTest, "local", "k", request_hash({"other": 1}), row())
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(RangeTest)) == 1
