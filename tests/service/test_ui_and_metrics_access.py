"""Who may see the web page and /metrics: once keys exist the page asks for one (a login form
setting an HttpOnly cookie that holds a server-side session, never the key), tenants see only
their own work, the login never redirects off the site, logging out (a POST) and revoking the
key end the session; /metrics can be turned off, requires a token once keys exist, or is
explicitly public."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.auth import ops as auth
from service.auth.models import WebSession
from service.config import Settings
from service.main import create_app
from tests.service.helpers import STUDY, count
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

    logout = client.post("/ui/logout", follow_redirects=False)
    assert logout.status_code == 303 and logout.headers["location"] == "/ui/login"
    assert 'lrsearch_session=""' in logout.headers["set-cookie"]


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


def login(client: TestClient, key: str, **headers: str) -> str:
    """Log in through the form; returns the Set-Cookie header."""
    r = client.post("/ui/login", data={"key": key, "next": "/ui"}, headers=headers,
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return r.headers["set-cookie"]


def test_the_cookie_holds_a_session_not_the_key(client: TestClient, engine: Engine) -> None:
    key = make_key(engine, "team-a")
    cookie = login(client, key)
    token = client.cookies["lrsearch_session"]
    # Neither the key nor any part of it travels in the cookie, and the token is not a hash
    # of the key: it is 256 random bits, stored server-side only as its sha256.
    prefix, secret = key.split("_")[1], key.split("_", 2)[2]
    assert key not in cookie and secret not in cookie and prefix not in token
    assert token != hashlib.sha256(key.encode()).hexdigest() and len(token) >= 43
    with Session(engine) as s:
        [row] = s.scalars(select(WebSession)).all()
        assert row.id_hash == hashlib.sha256(token.encode()).hexdigest() != token
        assert row.tenant == "team-a" and row.expires_at > row.created_at
    assert "team-a" in client.get("/ui").text
    # A second login gets a new session, and the old one ends.
    login(client, key)
    assert client.cookies["lrsearch_session"] != token
    assert count(engine, WebSession) == 1


def test_logout_is_a_post_that_ends_the_session(client: TestClient, engine: Engine) -> None:
    key = make_key(engine, "team-a")
    login(client, key)
    token = client.cookies["lrsearch_session"]
    page = client.get("/ui")
    assert '<form class="logout" method="post" action="/ui/logout">' in page.text

    # A GET (a link, a prefetch, an <img> on another site) only shows the button.
    shown = client.get("/ui/logout", follow_redirects=False)
    assert shown.status_code == 200 and 'method="post" action="/ui/logout"' in shown.text
    assert "set-cookie" not in shown.headers
    assert client.get("/ui", follow_redirects=False).status_code == 200

    out = client.post("/ui/logout", follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert count(engine, WebSession) == 0
    # A copy of the old cookie is worthless: the session is gone on the server.
    client.cookies.set("lrsearch_session", token, path="/ui")
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")


def test_revoking_the_key_ends_its_sessions(client: TestClient, engine: Engine) -> None:
    key_a, key_b = make_key(engine, "team-a"), make_key(engine, "team-b")
    login(client, key_a)
    assert client.get("/ui", follow_redirects=False).status_code == 200
    other = TestClient(client.app)
    login(other, key_b)
    with Session(engine) as s, s.begin():
        auth.revoke(s, key_a.split("_")[1])
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    assert count(engine, WebSession) == 1  # team-b's session lives on
    assert "team-b" in other.get("/ui").text


def test_an_expired_session_asks_for_the_key_again(settings: Settings, engine: Engine) -> None:
    key = make_key(engine, "team-a")
    with TestClient(create_app(settings.model_copy(update={"web_session_seconds": 1}))) as c:
        login(c, key)
        with Session(engine) as s, s.begin():
            for row in s.scalars(select(WebSession)):
                row.expires_at = row.created_at - timedelta(seconds=1)
        r = c.get("/ui", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")


def test_the_cookie_is_secure_over_https_and_behind_a_trusted_proxy(
        settings: Settings, engine: Engine) -> None:
    key = make_key(engine, "team-a")
    proxied = {"X-Forwarded-Proto": "https"}
    for trusted, base, headers, secure in (
            (False, "http://testserver", {}, False),
            (False, "https://testserver", {}, True),
            # The header alone proves nothing unless the operator says a proxy sets it.
            (False, "http://testserver", proxied, False),
            (True, "http://testserver", proxied, True)):
        app = create_app(settings.model_copy(update={"trust_forwarded_headers": trusted}))
        with TestClient(app, base_url=base) as c:
            cookie = login(c, key, **headers).lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert ("; secure" in cookie) is secure, (trusted, base, headers, cookie)


def test_login_from_another_site_is_refused(client: TestClient, engine: Engine) -> None:
    key = make_key(engine, "team-a")
    for headers in ({"Origin": "https://evil.example"},
                    {"Referer": "https://evil.example/login-csrf.html"},
                    {"Origin": "null"}):
        r = client.post("/ui/login", data={"key": key}, headers=headers,
                        follow_redirects=False)
        assert r.status_code == 403, headers
        assert "Cross-site request refused" in r.json()["detail"]
        assert "set-cookie" not in r.headers
    assert count(engine, WebSession) == 0
    assert login(client, key, Origin="http://testserver")


def test_metrics_are_open_without_keys_and_need_the_token_once_keys_exist(
        settings: Settings, engine: Engine) -> None:
    with TestClient(create_app(settings)) as c:
        assert c.get("/metrics").status_code == 200  # local mode: no key was ever made
        make_key(engine, "team-a")
        closed = c.get("/metrics")
        assert closed.status_code == 401 and closed.json()["type"] == "unauthorized"
        assert "LRSEARCH_METRICS_TOKEN" in closed.json()["detail"]
        assert "LRSEARCH_METRICS_PUBLIC" in closed.json()["detail"]
    with TestClient(create_app(settings.model_copy(update={"metrics_public": True}))) as c:
        assert c.get("/metrics").status_code == 200
    with TestClient(create_app(settings.model_copy(update={"metrics_token": "s3cret"}))) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=bearer("s3cret")).status_code == 200
