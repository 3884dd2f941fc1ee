"""API keys and tenant isolation: 401 without a valid key on every protected route, another
tenant's ids answer 404 exactly like missing ones, revoked keys stop working."""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.auth import ops as auth
from service.config import Settings
from service.main import create_app
from tests.processes import LRSEARCH
from tests.service.helpers import STUDY, run_trial

OPEN = {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def make_key(engine: Engine, tenant: str) -> str:
    with Session(engine) as s, s.begin():
        return auth.create(s, tenant)[1]


def protected_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, concrete path) the API documents, outside the open ones."""
    out: list[tuple[str, str]] = []
    for template, operations in client.get("/openapi.json").json()["paths"].items():
        if template in OPEN:
            continue
        path = re.sub(r"\{number\}", "0", re.sub(r"\{[a-z_]+\}", "x" * 32, template))
        out.extend((method.upper(), path) for method in operations)
    return out


@pytest.fixture
def keyed(client: TestClient, engine: Engine) -> Iterator[tuple[TestClient, str, str]]:
    """A client and keys of two tenants, a and b."""
    yield client, make_key(engine, "team-a"), make_key(engine, "team-b")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_every_protected_route_needs_a_valid_key(keyed: tuple[TestClient, str, str]) -> None:
    client, key_a, _ = keyed
    routes = protected_routes(client)
    assert len(routes) >= 20
    for headers in ({}, bearer("lrs_00000000_" + "x" * 43), bearer(key_a + "x"),
                    {"Authorization": "Basic abc"}, {"Authorization": f"Token {key_a}"}):
        for method, path in routes:
            r = client.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["type"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200


def test_other_tenants_resources_are_404_like_missing_ones(
        keyed: tuple[TestClient, str, str], engine: Engine) -> None:
    client, key_a, key_b = keyed
    a, b = bearer(key_a), bearer(key_b)
    sid = client.post("/v1/studies", json=STUDY, headers=a).json()["id"]
    run_trial(engine, sid, 0, "one_cycle", {"max_lr": 0.1}, 0.7)
    tid = client.post("/v1/range-tests", json={"dataset": "digits"}, headers=a).json()["id"]
    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.zeros((6, 2)), y_train=np.array([0, 1] * 3))
    assert client.post("/v1/datasets", data={"name": "mine"}, headers=a,
                       files={"file": ("m.npz", buffer.getvalue())}).status_code == 201
    owned = [("GET", f"/v1/studies/{sid}"), ("GET", f"/v1/studies/{sid}/best"),
             ("GET", f"/v1/studies/{sid}/trials"), ("GET", f"/v1/studies/{sid}/trials/0"),
             ("POST", f"/v1/studies/{sid}/cancel"), ("DELETE", f"/v1/studies/{sid}"),
             ("GET", f"/v1/range-tests/{tid}"), ("GET", "/v1/datasets/mine"),
             ("DELETE", "/v1/datasets/mine")]
    for method, path in owned:
        theirs = client.request(method, path, headers=b)
        missing = client.request(method, re.sub(r"[0-9a-f]{32}|mine", "f" * 32, path),
                                 headers=b)
        assert theirs.status_code == missing.status_code == 404, (method, path)
        assert theirs.json()["type"] == missing.json()["type"] == "not_found"
    for path in ("/v1/studies", "/v1/range-tests"):
        assert client.get(path, headers=b).json()["total"] == 0
        assert client.get(path, headers=a).json()["total"] == 1
    assert "mine" not in {d["name"] for d in client.get("/v1/datasets", headers=b).json()}
    r = client.post("/v1/studies", json={**STUDY, "dataset": "mine"}, headers=b)
    assert r.status_code == 422 and "mine" in r.json()["detail"]
    # Everything still there for its owner.
    assert client.get(f"/v1/studies/{sid}/best", headers=a).status_code == 200


def test_revoked_key_is_401(keyed: tuple[TestClient, str, str], engine: Engine) -> None:
    client, key_a, key_b = keyed
    assert client.get("/v1/studies", headers=bearer(key_a)).status_code == 200
    with Session(engine) as s, s.begin():
        auth.revoke(s, key_a.split("_")[1])
    assert client.get("/v1/studies", headers=bearer(key_a)).status_code == 401
    assert client.get("/v1/studies", headers=bearer(key_b)).status_code == 200


def test_keys_are_stored_hashed(engine: Engine) -> None:
    key = make_key(engine, "team-a")
    with Session(engine) as s:
        [row] = auth.list_keys(s)
        assert key not in (row.key_hash, row.prefix) and row.prefix in key
        assert auth.authenticate(s, key) == "team-a"
        tampered = key[:-1] + ("B" if key[-1] == "A" else "A")
        assert auth.authenticate(s, tampered) is None


def test_anonymous_local_tenant_only_until_a_key_exists(client: TestClient,
                                                        engine: Engine) -> None:
    assert client.get("/v1/studies").status_code == 200  # no key exists: local tenant
    make_key(engine, "team-a")
    assert client.get("/v1/studies").status_code == 401


def test_revoking_the_last_key_keeps_the_server_locked(client: TestClient,
                                                       engine: Engine) -> None:
    assert client.post("/v1/studies", json=STUDY).status_code == 201  # no key yet: local
    key = make_key(engine, "team-a")
    with Session(engine) as s, s.begin():
        auth.revoke(s, key.split("_")[1])
        assert auth.any_key_ever(s)  # a revoked key still counts
    # Anonymous access does not come back: every request without a key is refused.
    for method, path in (("GET", "/v1/studies"), ("GET", "/v1/schedules"),
                         ("POST", "/v1/studies")):
        r = client.request(method, path, json=STUDY if method == "POST" else None)
        assert r.status_code == 401, (method, path)
        assert "Missing API key" in r.json()["detail"]
    assert client.get("/v1/studies", headers=bearer(key)).status_code == 401
    page = client.get("/ui", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/ui/login")


def test_without_anonymous_access_no_key_means_401(settings: Settings, engine: Engine) -> None:
    with TestClient(create_app(settings, anonymous=False)) as c:
        assert c.get("/v1/schedules").status_code == 401
        assert c.get("/healthz").status_code == 200


def test_bad_tenant_name(engine: Engine) -> None:
    from service.errors import Invalid

    with Session(engine) as s, pytest.raises(Invalid, match="tenant"):
        auth.create(s, "../x")


def test_active_study_limit_is_429(client: TestClient, settings: Settings) -> None:
    settings.max_active_studies = 2
    for _ in range(2):
        assert client.post("/v1/studies", json=STUDY).status_code == 201
    r = client.post("/v1/studies", json=STUDY)
    assert r.status_code == 429 and "LRSEARCH_MAX_ACTIVE_STUDIES=2" in r.json()["detail"]




def test_cli_keys_and_the_loopback_rule(settings: Settings, engine: Engine,
                                        tmp_path: Path) -> None:
    import os

    env = {**os.environ, "LRSEARCH_DATABASE_URL": settings.database_url}

    def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LRSEARCH, *args], capture_output=True, text=True, env=env,
                              timeout=timeout)

    refused = cli("api", "--host", "0.0.0.0", "--port", "1")
    assert refused.returncode != 0 and "refusing to serve on 0.0.0.0" in refused.stderr
    created = cli("keys", "create", "--tenant", "team-a", "--name", "ci")
    assert created.returncode == 0, created.stderr
    key = created.stdout.split()[0]
    assert key.startswith("lrs_")
    listed = cli("keys", "list")
    assert "team-a" in listed.stdout and key not in listed.stdout
    with Session(engine) as s:
        assert auth.authenticate(s, key) == "team-a"
    prefix = key.split("_")[1]
    assert cli("keys", "revoke", prefix).returncode == 0
    assert "revoked" in cli("keys", "list").stdout
    with Session(engine) as s:
        assert auth.authenticate(s, key) is None
    unknown = cli("keys", "revoke", "ffffffff")
    assert unknown.returncode == 2 and "ffffffff" in unknown.stderr
    assert cli("keys", "create", "--tenant", "Bad/Name").returncode == 2
