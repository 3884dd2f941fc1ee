"""The API key cache (service/auth/cache.py, LRSEARCH_KEY_CACHE_SECONDS): a remembered key costs
no query; a key revoked elsewhere stops within the cache's seconds in every API process, and at
once in the process that revokes it; a new key works at once; anonymous access ends with the
first key (at once in this process, within the seconds elsewhere)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.auth import ops as auth
from service.auth.cache import KeyCache
from service.config import Settings
from service.main import create_app
from tests.processes import LRSEARCH, free_port, wait_ready


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_key(engine: Engine, tenant: str) -> str:
    with Session(engine) as s, s.begin():
        return auth.create(s, tenant)[1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def revoke_elsewhere(engine: Engine, key: str) -> None:
    """What another process's `keys revoke` leaves in the database, without this process's
    caches hearing of it (auth.revoke would tell them)."""
    with engine.begin() as c:
        c.execute(text("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP WHERE prefix = :p"),
                  {"p": key.split("_")[1]})


def lrsearch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([LRSEARCH, *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def clean_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    return {**env, "LRSEARCH_DATABASE_URL": settings.database_url,
            "LRSEARCH_DATA_DIR": str(settings.data_dir), **extra}


@pytest.fixture
def cached(settings: Settings, engine: Engine) -> Iterator[tuple[TestClient, Clock]]:
    """A client whose app's key cache (5 s) runs on a clock the test moves."""
    app = create_app(settings.model_copy(update={"key_cache_seconds": 5.0}))
    clock = Clock()
    app.state.key_cache = KeyCache(5.0, settings.database_url, clock=clock)
    with TestClient(app) as client:
        yield client, clock


def key_queries(client: TestClient) -> Callable[[], list[str]]:
    """The statements on api_keys the app's engine runs from now on."""
    seen: list[str] = []
    app: Any = client.app

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "api_keys" in statement:
            seen.append(statement)

    event.listen(app.state.engine, "before_cursor_execute", record)
    return lambda: seen


def test_a_remembered_key_costs_no_query_and_ends_with_its_seconds(
        cached: tuple[TestClient, Clock], engine: Engine) -> None:
    client, clock = cached
    key = make_key(engine, "team-a")
    queries = key_queries(client)
    assert client.get("/v1/studies", headers=bearer(key)).status_code == 200
    assert len(queries()) == 1  # the first request checks the database
    for _ in range(5):
        assert client.get("/v1/studies", headers=bearer(key)).status_code == 200
    assert len(queries()) == 1  # ... the next ones do not
    revoke_elsewhere(engine, key)
    clock.now += 4.9
    assert client.get("/v1/studies", headers=bearer(key)).status_code == 200  # stale, < 5 s
    clock.now += 0.1
    r = client.get("/v1/studies", headers=bearer(key))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_revoked_in_this_process_stops_at_once(cached: tuple[TestClient, Clock],
                                               engine: Engine) -> None:
    client, _ = cached
    key, other = make_key(engine, "team-a"), make_key(engine, "team-b")
    for k in (key, other):
        assert client.get("/v1/studies", headers=bearer(k)).status_code == 200
    with Session(engine) as s, s.begin():
        auth.revoke(s, key.split("_")[1])
    assert client.get("/v1/studies", headers=bearer(key)).status_code == 401
    assert client.get("/v1/studies", headers=bearer(other)).status_code == 200


def test_refused_keys_are_not_remembered_and_new_keys_work_at_once(
        cached: tuple[TestClient, Clock], engine: Engine) -> None:
    client, _ = cached
    queries = key_queries(client)
    bad = bearer("lrs_00000000_" + "x" * 43)
    for _ in range(3):
        assert client.get("/v1/studies", headers=bad).status_code == 401
    assert len(queries()) == 3  # every refused key is checked again
    key = make_key(engine, "team-a")
    assert client.get("/v1/studies", headers=bearer(key)).status_code == 200


def test_no_key_yet_is_believed_for_its_seconds_unless_created_here(
        cached: tuple[TestClient, Clock], engine: Engine) -> None:
    client, clock = cached
    queries = key_queries(client)
    for _ in range(3):
        assert client.get("/v1/studies").status_code == 200  # no key: the local tenant
    assert len(queries()) == 1
    # A key made by another process: anonymous access goes on until the seconds pass.
    with engine.begin() as c:
        c.execute(text("INSERT INTO api_keys (prefix, key_hash, tenant, created_at) VALUES "
                       "('0123abcd', :h, 'team-a', CURRENT_TIMESTAMP)"), {"h": "0" * 64})
    assert client.get("/v1/studies").status_code == 200
    clock.now += 5
    assert client.get("/v1/studies").status_code == 401
    clock.now += 3600  # "a key exists" is for good
    assert client.get("/v1/studies").status_code == 401


def test_a_key_created_in_this_process_ends_anonymous_access_at_once(
        cached: tuple[TestClient, Clock], engine: Engine) -> None:
    client, _ = cached
    assert client.get("/v1/studies").status_code == 200
    make_key(engine, "team-a")
    assert client.get("/v1/studies").status_code == 401


def test_zero_seconds_checks_every_time(settings: Settings, engine: Engine) -> None:
    key = make_key(engine, "team-a")
    with TestClient(create_app(settings.model_copy(update={"key_cache_seconds": 0}))) as client:
        queries = key_queries(client)
        for _ in range(3):
            assert client.get("/v1/studies", headers=bearer(key)).status_code == 200
        assert len(queries()) == 3
        revoke_elsewhere(engine, key)
        assert client.get("/v1/studies", headers=bearer(key)).status_code == 401


def test_real_seconds_after_a_cli_revoke(settings: Settings, engine: Engine) -> None:
    """The wall clock, a real `lrsearch keys revoke` in another process: 401 within 1 s."""
    app = create_app(settings.model_copy(update={"key_cache_seconds": 1.0}))
    key = make_key(engine, "team-a")
    with TestClient(app) as client:
        assert client.get("/v1/studies", headers=bearer(key)).status_code == 200
        lrsearch(clean_env(settings), "keys", "revoke", key.split("_")[1])
        revoked = time.monotonic()
        wait_refused(lambda: client.get("/v1/studies", headers=bearer(key)).status_code,
                     revoked + 1.0 + 0.5)


def wait_refused(status: Callable[[], int], deadline: float) -> float:
    """Polls until `status()` is 401 (only 200 before it); returns when, failing past
    `deadline`."""
    while True:
        code = status()
        now = time.monotonic()
        if code == 401:
            return now
        assert code == 200, code
        assert now < deadline, "still accepted past the cache's seconds"
        time.sleep(0.05)


def status_of(client: httpx.Client, key: str) -> int:
    return client.get("/v1/studies", headers=bearer(key)).status_code


def test_cache_bound_and_races() -> None:
    clock = Clock()
    cache = KeyCache(5.0, "sqlite:///x.db", max_entries=3, clock=clock)
    for i in range(3):
        cache.remember(f"h{i}", f"t{i}", cache.ticket())
    assert cache.tenant("h0") == "t0"  # h0 is now the most recently used
    cache.remember("h3", "t3", cache.ticket())
    assert len(cache) == 3 and cache.tenant("h1") is None  # the least recently used went
    assert [cache.tenant(h) for h in ("h0", "h2", "h3")] == ["t0", "t2", "t3"]
    # A check that began before a revocation in this process remembers nothing.
    ticket = cache.ticket()
    cache.forget("h9")
    cache.remember("h4", "t4", ticket)
    assert cache.tenant("h4") is None
    # Its time runs from the start of the check.
    ticket = cache.ticket()
    clock.now += 3
    cache.remember("h5", "t5", ticket)
    clock.now += 2
    assert cache.tenant("h5") is None
    off = KeyCache(0, "sqlite:///x.db")
    off.remember("h", "t", off.ticket())
    off.remember_keys_exist(False, off.ticket())
    assert off.tenant("h") is None and off.keys_exist() is None
    with pytest.raises(ValueError, match="seconds"):
        KeyCache(-1, "sqlite:///x.db")


def test_two_api_processes_stop_a_revoked_key_within_the_seconds(
        settings: Settings, engine: Engine, tmp_path: Path) -> None:
    """Two `lrsearch api` processes on one database, LRSEARCH_KEY_CACHE_SECONDS=2: each
    remembers a key once it checked it; after a revocation by another process (the test's
    SQL, then a real `lrsearch keys revoke`), both refuse it within 2 s (plus polling)."""
    seconds = 2.0
    env = clean_env(settings, LRSEARCH_KEY_CACHE_SECONDS=str(seconds))
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for i in range(2):
            port, log = free_port(), tmp_path / f"api{i}.log"
            with open(log, "wb") as out:
                procs.append(subprocess.Popen([LRSEARCH, "api", "--port", str(port)],
                                              env=env, stdout=out, stderr=out))
            urls.append(f"http://127.0.0.1:{port}")
            wait_ready(urls[-1], procs[-1], log)
        clients = [httpx.Client(base_url=url, timeout=10) for url in urls]
        by_sql, by_cli = make_key(engine, "team-a"), make_key(engine, "team-b")

        def statuses(key: str) -> list[int]:
            return [status_of(c, key) for c in clients]

        # Revoked by SQL right after both checked the key: both still accept it (from
        # memory), then both refuse it once the seconds have passed.
        assert statuses(by_sql) == [200, 200]
        warmed = time.monotonic()
        revoke_elsewhere(engine, by_sql)
        still = statuses(by_sql)
        if time.monotonic() - warmed < seconds - 0.5:  # not a stalled machine
            assert still == [200, 200]
        for c in clients:
            wait_refused(partial(status_of, c, by_sql), warmed + seconds + 1.0)
        # A real `lrsearch keys revoke`.
        assert statuses(by_cli) == [200, 200]
        lrsearch(env, "keys", "revoke", by_cli.split("_")[1])
        revoked = time.monotonic()
        for c in clients:
            wait_refused(partial(status_of, c, by_cli), revoked + seconds + 1.0)
        for c in clients:
            c.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
