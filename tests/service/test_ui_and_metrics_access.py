"""Who may see the web page and /metrics: once keys exist the page asks for one (a login form
setting an HttpOnly cookie), tenants see only their own work, the login never redirects off
the site; /metrics can be turned off or require a token."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from service.config import Settings
from service.main import create_app
from tests.service.helpers import STUDY
from tests.service.test_auth import bearer, make_key


def test_the_page_asks_for_a_key_once_keys_exist(client: TestClient, engine: Engine) -> None:
    assert client.get("/ui").status_code == 200  # no key yet: the local tenant
    key_a, key_b = make_key(engine, "team-a"), make_key(engine, "team-b")
    study = client.post("/v1/studies", json=STUDY, headers=bearer(key_a)).json()["id"]

    r = client.get(f"/ui/studies/{study}", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/ui/login?next=/ui/studies/{study}"
    wrong = client.post("/ui/login", data={"key": key_a + "x", "next": "/ui"},
                        follow_redirects=False)
    assert wrong.status_code == 401 and "Invalid or revoked API key." in wrong.text
    assert "set-cookie" not in wrong.headers

    ok = client.post("/ui/login", data={"key": key_a, "next": f"/ui/studies/{study}"},
                     follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == f"/ui/studies/{study}"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    page = client.get(f"/ui/studies/{study}")
    assert page.status_code == 200 and "team-a" in page.text and study in page.text
    assert client.get(f"/ui/studies/{study}/plots/history.png").headers["content-type"] == \
        "image/png"
    # The cookie is only for the page: the API still wants the header.
    assert client.get(f"/v1/studies/{study}").status_code == 401

    client.cookies.clear()
    client.post("/ui/login", data={"key": key_b})
    other = client.get(f"/ui/studies/{study}")
    assert other.status_code == 404 and f"Unknown study `{study}`" in other.text
    assert study not in client.get("/ui").text

    logout = client.get("/ui/logout", follow_redirects=False)
    assert logout.status_code == 303 and 'lrsearch_key=""' in logout.headers["set-cookie"]


def test_login_never_redirects_off_the_site(client: TestClient, engine: Engine) -> None:
    key = make_key(engine, "team-a")
    for target in ("https://evil.example/", "//evil.example/ui", "/v1/studies", "ui"):
        r = client.post("/ui/login", data={"key": key, "next": target},
                        follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui", target


def test_metrics_can_require_a_token_or_be_off(settings: Settings, engine: Engine) -> None:
    with TestClient(create_app(settings.model_copy(update={"metrics_token": "s3cret"}))) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=bearer("wrong")).status_code == 401
        r = c.get("/metrics", headers=bearer("s3cret"))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        names = {f.name for f in text_string_to_metric_families(r.text)}
        assert {"lrsearch_jobs", "lrsearch_trials_finished", "lrsearch_trial_duration_seconds",
                "lrsearch_workers_alive", "lrsearch_http_request_duration_seconds",
                "lrsearch_studies"} <= names
    with TestClient(create_app(settings.model_copy(update={"metrics_enabled": False}))) as c:
        assert c.get("/metrics").status_code == 404
