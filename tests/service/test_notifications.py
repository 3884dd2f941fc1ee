"""Study-end notifications, on SQLite and PostgreSQL: a real HTTP receiver on 127.0.0.1 (the
tests allow-list it: loopback is refused by default) gets one signed POST per ended study;
failures are retried with backoff and every attempt shows in the API; URLs that name internal
addresses are refused at submission, and again right before sending; two sweepers (threads
racing for one claim, and two real `lrsearch reaper` processes) never send one notification
twice; a rotated secret stops signing at once; an attempt ends at its deadline however slowly
the receiver answers, and neither workers nor the reaper let sending hold up their own work;
the documented receiver refuses malformed signatures and replays; a deleted study is still
notified."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from lrsearch.client import Client, verify_signature
from service.config import Settings
from service.db import make_engine
from service.jobs.models import Job
from service.main import create_app
from service.notifications import delivery, ops, urls
from service.notifications.models import WebhookAttempt, WebhookDelivery
from service.studies import progress
from service.studies.models import Study
from tests.processes import LRSEARCH, free_port, wait_ready
from tests.service.helpers import STUDY, count, run_trial

NOTIFY = {"notify_allowed_hosts": ["127.0.0.1"], "notify_backoff_seconds": 0.3,
          "notify_max_attempts": 5, "notify_timeout_seconds": 2.0,
          "notify_poll_seconds": 0.05}
PARAMS = {"max_lr": 0.1}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with 127.0.0.1 allowed and short backoffs."""
    return settings.model_copy(update=NOTIFY)


@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread: records every POST and answers with the next
    of `statuses` (200 once they run out), after `delay` seconds."""

    def __init__(self, statuses: tuple[int, ...] = (), delay: float = 0.0) -> None:
        self.statuses, self.delay = list(statuses), delay
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.received.append(Received(time.monotonic(),
                                                      {k.lower(): v for k, v in
                                                       self.headers.items()}, body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?source=lrsearch"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(statuses: tuple[int, ...] = (), delay: float = 0.0) -> Receiver:
        made.append(Receiver(statuses, delay))
        return made[-1]

    yield make
    for r in made:
        r.close()


class Dripper:
    """A raw HTTP server on 127.0.0.1: reads each request, then answers the n-th connection as
    `answers[n]` says (a plain 200 once they run out): "drip" sends a 200's status line and
    headers one byte every `pause` seconds (each read gets a byte long before any per-read
    timeout), "huge" sends 20 KB of headers at once. Records when each request arrived."""

    HEAD = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 150 + b"\r\nContent-Length: 0\r\n\r\n"

    def __init__(self, answers: tuple[str, ...] = (), pause: float = 0.1) -> None:
        self.answers, self.pause = answers, pause
        self.arrived: list[float] = []
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            with self.lock:
                n = len(self.arrived)
                self.arrived.append(time.monotonic())
            kind = self.answers[n] if n < len(self.answers) else "ok"
            try:
                if kind == "drip":
                    for byte in self.HEAD:
                        conn.sendall(bytes([byte]))
                        time.sleep(self.pause)
                elif kind == "huge":
                    conn.sendall(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: aaaaaaaaaa\r\n" * 1100
                                 + b"Content-Length: 0\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except OSError:  # the sender hung up
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dripper() -> Iterator[Callable[..., Dripper]]:
    made: list[Dripper] = []

    def make(answers: tuple[str, ...] = (), pause: float = 0.1) -> Dripper:
        made.append(Dripper(answers, pause))
        return made[-1]

    yield make
    for d in made:
        d.close()


Db = Callable[[Callable[[Session], Any]], Any]


@pytest.fixture
def db(settings: Settings, engine: Engine) -> Iterator[Db]:
    """A sweeper's transaction helper, as the worker and the reaper have it (SQLite: every
    transaction BEGIN IMMEDIATE)."""
    own = make_engine(settings.database_url, immediate=True)

    def run(fn: Callable[[Session], Any]) -> Any:
        with Session(own) as session, session.begin():
            return fn(session)

    yield run
    own.dispose()


def submit(client: TestClient, url: str, **overrides: Any) -> str:
    r = client.post("/v1/studies", json={**STUDY, "notify": {"url": url}, **overrides})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def secret(client: TestClient) -> str:
    r = client.post("/v1/webhook-secret")
    assert r.status_code == 201, r.text
    value = r.json()["secret"]
    assert value.startswith("whsec_") and len(value) > 40
    return str(value)


def finish(engine: Engine, sid: str, slots: int = 3) -> None:
    """Every slot of the study completes (as a worker records it): the study succeeds."""
    for slot in range(slots):
        run_trial(engine, sid, slot, "one_cycle", {"max_lr": 0.1 * (slot + 1)},
                  0.7 + slot / 100)


def mark_done(engine: Engine, sid: str, slot: int) -> None:
    with Session(engine) as s, s.begin():
        s.execute(update(Job).where(Job.study_id == sid, Job.slot == slot).values(state="done"))


def sweep_until(db: Db, settings: Settings, done: Callable[[], bool], timeout: float = 30,
                owner: str = "test-sweeper") -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the notification was not sent in time"
        delivery.sweep(db, settings, owner)
        time.sleep(0.02)


def notifications(client: TestClient, sid: str) -> list[dict[str, Any]]:
    r = client.get(f"/v1/studies/{sid}/notifications")
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def expected_hmac(secret: str, header: str, body: bytes) -> bool:
    """The documented scheme, recomputed independently of the service's code."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    mac = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), fields["v1"])


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- (1) the signature ------------------------------------------------------------------------
def test_a_finished_study_posts_one_signed_summary(
        client: TestClient, engine: Engine, db: Db, settings: Settings,
        receiver: Callable[..., Receiver]) -> None:
    hook = receiver()
    key = secret(client)
    sid = submit(client, hook.url, name="signed")
    assert notifications(client, sid) == []  # nothing until the study ends
    finish(engine, sid)
    sweep_until(db, settings, lambda: len(hook.received) == 1)
    got = hook.received[0]
    signature = got.headers["x-lrsearch-signature"]
    assert expected_hmac(key, signature, got.body)
    assert verify_signature(key, got.body, signature)
    assert not verify_signature(key, got.body + b" ", signature)  # the body is covered
    assert not verify_signature(key, got.body, signature, now=time.time() + 3600)  # replay
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-lrsearch-event"] == "study.ended"
    assert got.headers["x-lrsearch-attempt"] == "1"

    payload = json.loads(got.body)
    study = client.get(f"/v1/studies/{sid}").json()
    assert payload["event"] == "study.ended"
    assert payload["delivery_id"] == got.headers["x-lrsearch-delivery"]
    assert payload["ended_at"] == study["finished_at"] is not None
    study.pop("request")
    assert payload["study"] == study  # the API's shape, without the submitted body
    assert study["status"] == "succeeded" and study["name"] == "signed"
    best = study["best"]
    assert best["value"] == pytest.approx(0.72) and best["trial_number"] == 2
    assert best["family"] == "one_cycle" and best["params"] == {"max_lr": pytest.approx(0.3)}
    assert study["counts"]["complete"] == 3 and study["stop_reason"] is None

    [shown] = notifications(client, sid)
    assert shown["state"] == "delivered" and shown["n_attempts"] == 1
    assert shown["id"] == payload["delivery_id"] and shown["url"] == hook.url
    assert shown["payload"] == payload and shown["last_error"] is None
    [attempt] = shown["attempts"]
    assert attempt["status_code"] == 200 and attempt["error"] is None
    assert attempt["address"] == "127.0.0.1" and attempt["retry_at"] is None
    assert at(attempt["started_at"]) <= at(attempt["finished_at"])
    delivery.sweep(db, settings, "again")
    assert len(hook.received) == 1  # delivered once, never again


def test_a_rotated_secret_stops_signing_at_once(
        client: TestClient, engine: Engine, db: Db, settings: Settings,
        receiver: Callable[..., Receiver]) -> None:
    hook = receiver()
    assert client.get("/v1/webhook-secret").json() == {"tenant": "local", "exists": False,
                                                       "created_at": None}
    first = secret(client)
    info = client.get("/v1/webhook-secret").json()
    assert info["exists"] is True and "secret" not in info
    one = submit(client, hook.url)
    client.post(f"/v1/studies/{one}/cancel")
    second = secret(client)  # rotated before the first notification went out
    assert second != first
    sweep_until(db, settings, lambda: len(hook.received) == 1)
    got = hook.received[0]
    assert json.loads(got.body)["study"]["status"] == "cancelled"
    assert expected_hmac(second, got.headers["x-lrsearch-signature"], got.body)
    assert not expected_hmac(first, got.headers["x-lrsearch-signature"], got.body)

    # The command line: a new secret only with --rotate (one exists: it is not shown again).
    env = {**os.environ, "LRSEARCH_DATABASE_URL": settings.database_url}
    kept = subprocess.run([LRSEARCH, "keys", "webhook-secret", "--tenant", "local"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert kept.returncode == 2 and "already has a webhook secret" in kept.stderr, kept.stderr
    rotated = subprocess.run([LRSEARCH, "keys", "webhook-secret", "--tenant", "local",
                              "--rotate"], capture_output=True, text=True, env=env, timeout=120)
    assert rotated.returncode == 0, rotated.stderr
    third = rotated.stdout.splitlines()[0]
    assert third.startswith("whsec_") and third != second and "shown only once" in rotated.stdout
    other = subprocess.run([LRSEARCH, "keys", "webhook-secret", "--tenant", "team-b"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert other.returncode == 0 and other.stdout.startswith("whsec_"), other.stderr

    two = submit(client, hook.url)
    client.post(f"/v1/studies/{two}/cancel")
    sweep_until(db, settings, lambda: len(hook.received) == 2)
    got = hook.received[1]
    assert expected_hmac(third, got.headers["x-lrsearch-signature"], got.body)
    assert not any(expected_hmac(old, got.headers["x-lrsearch-signature"], got.body)
                   for old in (first, second))


# -- (2) retries ------------------------------------------------------------------------------
def test_a_failing_receiver_is_retried_with_backoff_and_every_attempt_shows(
        client: TestClient, engine: Engine, db: Db, settings: Settings,
        receiver: Callable[..., Receiver]) -> None:
    hook = receiver(statuses=(500, 503))
    secret(client)
    sid = submit(client, hook.url)
    finish(engine, sid)
    sweep_until(db, settings, lambda: notifications(client, sid)[0]["state"] == "delivered")
    [shown] = notifications(client, sid)
    attempts = shown["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3] and shown["n_attempts"] == 3
    assert [a["status_code"] for a in attempts] == [500, 503, 200]
    assert [a["error"] for a in attempts] == ["HTTP 500", "HTTP 503", None]
    for a, wait in zip(attempts, (0.3, 0.6), strict=False):  # 0.3 s * 2**(n-1)
        assert at(a["retry_at"]) - at(a["finished_at"]) == pytest.approx(wait, abs=0.01)
    for before, after in itertools.pairwise(attempts):
        assert at(after["started_at"]) >= at(before["retry_at"])
    assert attempts[2]["retry_at"] is None and shown["last_error"] is None
    # The receiver saw the same body and delivery id each time, spaced by the backoff.
    assert len({r.body for r in hook.received}) == 1
    assert {r.headers["x-lrsearch-delivery"] for r in hook.received} == {shown["id"]}
    assert [r.headers["x-lrsearch-attempt"] for r in hook.received] == ["1", "2", "3"]
    gaps = [b.at - a.at for a, b in itertools.pairwise(hook.received)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps


def test_a_receiver_that_is_down_fails_after_the_last_attempt(
        client: TestClient, engine: Engine, db: Db, settings: Settings) -> None:
    secret(client)
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    sid = submit(client, down)
    client.post(f"/v1/studies/{sid}/cancel")
    short = settings.model_copy(update={"notify_max_attempts": 3,
                                        "notify_backoff_seconds": 0.1})
    sweep_until(db, short, lambda: notifications(client, sid)[0]["state"] == "failed")
    [shown] = notifications(client, sid)
    attempts = shown["attempts"]
    assert len(attempts) == 3 and shown["n_attempts"] == 3
    assert all(a["status_code"] is None and "could not connect to 127.0.0.1" in a["error"]
               for a in attempts), attempts
    assert [a["retry_at"] is None for a in attempts] == [False, False, True]
    assert shown["last_error"] == attempts[-1]["error"] and shown["finished_at"] is not None
    assert shown["next_attempt_at"] is None
    delivery.sweep(db, short, "again")
    assert len(notifications(client, sid)[0]["attempts"]) == 3  # failed is final


# -- (3) refused addresses --------------------------------------------------------------------
INTERNAL = [
    ("http://127.0.0.1:8000/hook", "127.0.0.1 is not a public address (loopback)"),
    ("http://10.0.0.1/", "10.0.0.1 is not a public address (private)"),
    ("http://169.254.169.254/latest/meta-data/",
     "169.254.169.254 is not a public address (link-local)"),
    ("http://localhost:8000/hook", "not a public address (loopback)"),
    ("http://[::1]:8000/", "::1 is not a public address (loopback)"),
    ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1 is not a public address (loopback)"),
    ("http://0.0.0.0/", "0.0.0.0 is not a public address (unspecified)"),
    ("http://224.0.0.1/", "224.0.0.1 is not a public address (multicast)"),
    ("http://100.64.0.1/", "100.64.0.1 is not a public address (not globally routable)"),
]
MALFORMED = [
    ("ftp://example.com/hook", "must be an http or https URL"),
    ("http://user:pw@example.com/hook", "must not contain a user name or password"),
    ("http:///hook", "must name a host"),
    ("javascript:alert(1)", "must be an http or https URL"),
    ("http://example.com:99999/", "invalid port"),
    ("http://exa mple.com/", "must not contain spaces"),
    ("http://example.com/#frag", "must not have a #fragment"),
    ("https://" + "a" * 2050 + ".com/", "at most 2048 characters"),
]


def test_internal_and_malformed_urls_are_refused_at_submission(
        settings: Settings, engine: Engine) -> None:
    default = settings.model_copy(update={"notify_allowed_hosts": []})  # public only
    with TestClient(create_app(default)) as client:
        r = client.post("/v1/studies", json={**STUDY, "notify": {"url": "https://1.1.1.1/"}})
        assert r.status_code == 422 and r.json()["field"] == "notify", r.text
        assert "no webhook secret" in r.json()["detail"]
        secret(client)
        for url, why in INTERNAL:
            r = client.post("/v1/studies", json={**STUDY, "notify": {"url": url}})
            assert r.status_code == 422, (url, r.text)
            body = r.json()
            assert body["type"] == "invalid" and body["field"] == "notify.url", body
            assert why in body["detail"] and f"notify.url={url!r}" in body["detail"], body
        for url, why in MALFORMED:
            r = client.post("/v1/studies", json={**STUDY, "notify": {"url": url}})
            assert r.status_code == 422, (url, r.text)
            body = r.json()
            assert body["type"] == "validation_error", body
            assert body["errors"][0]["loc"] == ["body", "notify", "url"], body
            assert body["detail"].startswith("notify.url: ") and why in body["detail"], body
            if len(url) <= 60:
                assert f"(received {url!r})" in body["detail"], body
    # An allow-list names the only hosts: public addresses too need "public" in it.
    listed = settings.model_copy(update={"notify_allowed_hosts": ["127.0.0.1"]})
    with TestClient(create_app(listed)) as client:
        for url in ("http://10.0.0.1/", "https://93.184.215.14/hook", "http://localhost/"):
            r = client.post("/v1/studies", json={**STUDY, "notify": {"url": url}})
            assert r.status_code == 422 and r.json()["field"] == "notify.url", r.text
            assert "is not in LRSEARCH_NOTIFY_ALLOWED_HOSTS (127.0.0.1)" in r.json()["detail"]
    assert count(engine, Study) == 0 and count(engine, Job) == 0
    assert count(engine, WebhookDelivery) == 0
    both = settings.model_copy(update={"notify_allowed_hosts": ["public", "127.0.0.1"]})
    with TestClient(create_app(both)) as client:  # a public IP address needs no resolver
        sid = submit(client, "https://93.184.215.14/hook")
        assert client.get(f"/v1/studies/{sid}").json()["request"]["notify"] == {
            "url": "https://93.184.215.14/hook"}


def test_the_address_is_checked_again_right_before_sending(
        client: TestClient, engine: Engine, db: Db, settings: Settings,
        receiver: Callable[..., Receiver]) -> None:
    hook = receiver()
    secret(client)
    port = hook.server.server_address[1]
    at_submission = settings.model_copy(update={"notify_allowed_hosts": ["localhost"]})
    with TestClient(create_app(at_submission)) as listed:
        sid = submit(listed, f"http://localhost:{port}/hook")
    client.post(f"/v1/studies/{sid}/cancel")
    # Now "localhost" is only allowed if public (it is not), then not listed at all.
    public = settings.model_copy(update={"notify_allowed_hosts": [],
                                         "notify_backoff_seconds": 0.0})
    assert delivery.sweep(db, public, "sweeper", limit=1) == 1
    unlisted = public.model_copy(update={"notify_allowed_hosts": ["127.0.0.1"]})
    assert delivery.sweep(db, unlisted, "sweeper", limit=1) == 1
    assert hook.received == []  # nothing was sent
    # Allowed again: the next attempt goes out (to whichever address of localhost answers).
    allowed = public.model_copy(update={"notify_allowed_hosts": ["localhost"]})
    assert delivery.sweep(db, allowed, "sweeper", limit=1) == 1
    [shown] = notifications(client, sid)
    errors = [a["error"] for a in shown["attempts"]]
    assert errors[0].startswith("not sent: the host 'localhost' resolves to ")
    assert "not a public address (loopback)" in errors[0]
    assert errors[1] == ("not sent: the host 'localhost' is not in "
                         "LRSEARCH_NOTIFY_ALLOWED_HOSTS (127.0.0.1)")
    assert errors[2] is None and shown["state"] == "delivered" and len(hook.received) == 1
    assert hook.received[0].headers["host"] == f"localhost:{port}"


def test_a_name_that_resolves_elsewhere_later_is_refused_then() -> None:
    """DNS may answer differently at sending than at submission: every check resolves again,
    and the sender connects to the addresses of its own check."""
    answers = iter([["93.184.215.14"], ["93.184.215.14", "127.0.0.1"], ["10.1.2.3"]])

    def rebinding(host: str, port: int, timeout: float) -> list[str]:
        assert (host, port) == ("hooks.example.com", 443)
        return next(answers)

    url = "https://hooks.example.com/in"
    target = urls.check_target(url, [], 1.0, rebinding)
    assert target.addresses == ("93.184.215.14",) and target.host == "hooks.example.com"
    for why in (r"resolves to 127\.0\.0\.1, not a public address \(loopback\)",
                r"resolves to 10\.1\.2\.3, not a public address \(private\)"):
        with pytest.raises(urls.Refused, match=why):
            urls.check_target(url, [], 1.0, rebinding)
    # A listed name may resolve anywhere; "*.domain" lists its subdomains, not the domain.
    assert urls.check_target("http://x.hooks.lan/", ["*.hooks.lan"], 1.0,
                             lambda *_: ["10.0.0.7"]).addresses == ("10.0.0.7",)
    with pytest.raises(urls.Refused, match="is not in LRSEARCH_NOTIFY_ALLOWED_HOSTS"):
        urls.check_target("http://hooks.lan/", ["*.hooks.lan"], 1.0, lambda *_: ["10.0.0.7"])
    assert urls.check_target("http://[::1]:9/", ["[::1]"], 1.0).addresses == ("::1",)
    with pytest.raises(ValidationError, match="bare"):  # the environment gives a string
        Settings.model_validate({"notify_allowed_hosts": "*"})
    assert Settings.model_validate({"notify_allowed_hosts": "Public, Hooks.LAN"}
                                   ).notify_allowed_hosts == ["public", "hooks.lan"]


# -- every way a study ends -------------------------------------------------------------------
def _end(kind: str, client: TestClient, engine: Engine, url: str) -> str:
    if kind == "succeeded":
        sid = submit(client, url)
        finish(engine, sid)
    elif kind == "failed":
        sid = submit(client, url)
        for slot in range(3):
            run_trial(engine, sid, slot, "one_cycle", PARAMS, None, state="failed",
                      reason="diverged: loss is nan")
    elif kind == "cancelled":
        sid = submit(client, url)
        assert client.post(f"/v1/studies/{sid}/cancel").status_code == 200
    elif kind == "budget":
        sid = submit(client, url, budget={"max_epochs": 3})
        run_trial(engine, sid, 0, "one_cycle", PARAMS, 0.8, epochs=3)
        with Session(engine) as s, s.begin():  # the worker's per-epoch count
            progress.locked(s, sid).epochs_run = 3
        mark_done(engine, sid, 0)
        with Session(engine) as s, s.begin():
            assert progress.stop_for_budget(s, sid) is not None
    elif kind == "fail_fast":
        sid = submit(client, url)
        with Session(engine) as s, s.begin():
            progress.fail_fast(s, sid, "dataset changed since registration")
    else:  # the confirmation runs end the study, not the search before them
        sid = submit(client, url, family="cosine", n_trials=2, baseline={"trials": 2},
                     confirm={"top_k": 1, "seeds": 2})
        for slot, family, params, value, number in (
                (0, "cosine", {"peak_lr": 0.1}, 0.9, 0), (1, "cosine", {"peak_lr": 0.2}, 0.8, 1),
                (2, "constant", {"lr": 0.1}, 0.85, 0), (3, "constant", {"lr": 0.2}, 0.7, 1)):
            run_trial(engine, sid, slot, family, params, value, number=number)
            mark_done(engine, sid, slot)
        assert client.get(f"/v1/studies/{sid}").json()["phase"] == "confirm"
        assert notifications(client, sid) == []  # the search ended; the study has not
        for slot in range(4, 8):
            run_trial(engine, sid, slot, "cosine" if slot < 6 else "constant",
                      {"peak_lr": 0.1} if slot < 6 else {"lr": 0.1}, 0.9, number=None)
    return sid


@pytest.mark.parametrize("kind", ["succeeded", "failed", "cancelled", "budget", "fail_fast",
                                  "confirmation"])
def test_every_end_queues_exactly_one_notification(
        kind: str, client: TestClient, engine: Engine) -> None:
    secret(client)
    sid = _end(kind, client, engine, "http://127.0.0.1:9/hook")
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == {"succeeded": "succeeded", "failed": "failed",
                               "cancelled": "cancelled", "budget": "succeeded",
                               "fail_fast": "failed", "confirmation": "succeeded"}[kind]
    [shown] = notifications(client, sid)
    assert shown["state"] == "pending" and shown["attempts"] == []
    payload = shown["payload"]["study"]
    assert payload["status"] == study["status"] and payload["stop_reason"] == study["stop_reason"]
    assert shown["payload"]["ended_at"] == study["finished_at"]
    if kind in ("budget", "fail_fast"):
        assert payload["stop_reason"] is not None
    with Session(engine) as s, s.begin():  # a second look at the end changes nothing
        row = s.get(Study, sid)
        assert row is not None
        ops.study_ended(s, row)
    assert len(notifications(client, sid)) == 1
    plain = client.post("/v1/studies", json=STUDY).json()["id"]  # no notify: nothing queued
    client.post(f"/v1/studies/{plain}/cancel")
    assert notifications(client, plain) == []
    assert count(engine, WebhookDelivery) == 1


# -- (4) two sweepers -------------------------------------------------------------------------
def test_two_sweepers_racing_for_one_claim_send_it_once(
        client: TestClient, engine: Engine, settings: Settings,
        receiver: Callable[..., Receiver]) -> None:
    hook = receiver(delay=0.3)  # slow answers: the sweeps overlap
    secret(client)
    studies = [submit(client, hook.url) for _ in range(4)]
    client.post(f"/v1/studies/{studies[0]}/cancel")  # one notification is due
    engines = [make_engine(settings.database_url, immediate=True) for _ in range(2)]
    try:
        # Both claim the same due delivery at the same moment: one gets it.
        barrier = threading.Barrier(2)
        claims: list[ops.Claimed | None] = [None, None]

        def claim(i: int) -> None:
            with Session(engines[i]) as s, s.begin():
                barrier.wait()
                claims[i] = ops.claim(s, f"sweeper-{i}", 30.0, 5)

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        [won] = [c for c in claims if c is not None]
        outcome = delivery.send(won, settings)  # the winner sends it
        with Session(engines[0]) as s, s.begin():
            assert ops.record(s, won, outcome, settings) == "delivered"

        # Then three more are due, and both sweep until every one is out.
        for sid in studies[1:]:
            client.post(f"/v1/studies/{sid}/cancel")
        def sweeper(i: int) -> None:
            def run(fn: Callable[[Session], Any]) -> Any:
                with Session(engines[i]) as session, session.begin():
                    return fn(session)

            barrier.wait()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(hook.received) < 4:
                delivery.sweep(run, settings, f"sweeper-{i}")
                time.sleep(0.01)

        threads = [threading.Thread(target=sweeper, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for e in engines:
            e.dispose()
    time.sleep(0.5)  # anything sent twice would have arrived by now
    ids = [r.headers["x-lrsearch-delivery"] for r in hook.received]
    assert len(ids) == 4 and len(set(ids)) == 4, ids
    for sid in studies:
        [shown] = notifications(client, sid)
        assert shown["state"] == "delivered" and len(shown["attempts"]) == 1


def test_a_sender_that_died_mid_attempt_is_taken_over(
        client: TestClient, engine: Engine, db: Db, settings: Settings,
        receiver: Callable[..., Receiver]) -> None:
    hook = receiver()
    secret(client)
    sid = submit(client, hook.url)
    client.post(f"/v1/studies/{sid}/cancel")
    ghost = db(lambda s: ops.claim(s, "ghost", 0.2, 5))  # claims, then is never heard of
    assert ghost is not None and ghost.attempt == 1
    assert db(lambda s: ops.claim(s, "early", 30.0, 5)) is None  # its lease still holds
    time.sleep(0.5)
    sweep_until(db, settings, lambda: len(hook.received) == 1)
    [shown] = notifications(client, sid)
    assert shown["state"] == "delivered"
    assert [a["error"] for a in shown["attempts"]] == [ops.LOST, None]
    assert hook.received[0].headers["x-lrsearch-attempt"] == "2"
    # The ghost's late outcome does not overwrite the delivery it no longer holds.
    assert db(lambda s: ops.record(s, ghost, ops.Outcome(False, error="late"), settings)) \
        is None
    assert notifications(client, sid)[0]["state"] == "delivered"


def test_two_reaper_processes_deliver_each_notification_once(
        engine: Engine, settings: Settings, receiver: Callable[..., Receiver],
        tmp_path: Path) -> None:
    """A real API and two real `lrsearch reaper` processes polling at once; the client
    rotates the secret, submits, cancels and reads the attempts."""
    hook = receiver(statuses=(500,), delay=0.2)  # the first attempt fails: one retry
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.update(LRSEARCH_DATABASE_URL=settings.database_url,
               LRSEARCH_DATA_DIR=str(settings.data_dir), LRSEARCH_LEASE_SECONDS="4",
               LRSEARCH_NOTIFY_ALLOWED_HOSTS="127.0.0.1", LRSEARCH_NOTIFY_POLL_SECONDS="0.05",
               LRSEARCH_NOTIFY_BACKOFF_SECONDS="0.2", PYTHONUNBUFFERED="1")
    port = free_port()
    logs = [open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
            for name in ("api", "reaper0", "reaper1")]
    procs = [subprocess.Popen([LRSEARCH, "api", "--port", str(port)], env=env,
                              stdout=logs[0], stderr=logs[0])]
    try:
        procs += [subprocess.Popen([LRSEARCH, "reaper"], env=env, stdout=log, stderr=log)
                  for log in logs[1:]]
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, procs[0], tmp_path / "api.log")
        with Client(url) as c:
            key = c.rotate_webhook_secret()["secret"]
            assert c.webhook_secret()["exists"] is True
            studies = [c.submit({**STUDY, "notify": {"url": hook.url}})["id"]
                       for _ in range(3)]
            time.sleep(1.0)  # both reapers are polling by now
            for sid in studies:
                c.cancel(sid)
            deadline = time.monotonic() + 60
            while not all(c.notifications(sid) and c.notifications(sid)[0]["state"]
                          == "delivered" for sid in studies):
                assert time.monotonic() < deadline, [c.notifications(s) for s in studies]
                assert all(p.poll() is None for p in procs)
                time.sleep(0.2)
            time.sleep(1.0)  # a duplicate would have arrived by now
            shown = [c.notifications(sid)[0] for sid in studies]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()
    assert [p.returncode for p in procs[1:]] == [0, 0]  # uvicorn re-raises SIGTERM: -15
    # Four POSTs: one per study, plus the retry of the one that got the 500.
    assert len(hook.received) == 4, [r.headers for r in hook.received]
    per_delivery: dict[str, list[str]] = {}
    for r in hook.received:
        assert verify_signature(key, r.body, r.headers["x-lrsearch-signature"])
        per_delivery.setdefault(r.headers["x-lrsearch-delivery"], []).append(
            r.headers["x-lrsearch-attempt"])
    assert sorted(per_delivery.values()) == [["1"], ["1"], ["1", "2"]]
    assert sorted(len(d["attempts"]) for d in shown) == [1, 1, 2]
    retried = next(d for d in shown if len(d["attempts"]) == 2)
    assert [a["status_code"] for a in retried["attempts"]] == [500, 200]
    with Session(engine) as s:  # the attempts were made by the reapers
        senders = set(s.scalars(select(WebhookAttempt.sender)))
    assert senders and all(name.startswith("reaper:") for name in senders), senders
    for name in ("reaper0", "reaper1"):
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text()


# -- (5) an attempt's deadline ----------------------------------------------------------------
def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_deadline_and_retried(
        client: TestClient, db: Db, settings: Settings,
        dripper: Callable[..., Dripper]) -> None:
    """Per-read timeouts never fire when every read gets a byte: the attempt as a whole ends
    at LRSEARCH_NOTIFY_TIMEOUT_SECONDS, as a failed attempt retried after the backoff."""
    hook = dripper(("drip",), pause=0.1)  # the whole answer would take 17 s
    short = settings.model_copy(update={"notify_timeout_seconds": 1.0})
    secret(client)
    sid = submit(client, hook.url)
    client.post(f"/v1/studies/{sid}/cancel")
    started = time.monotonic()
    assert delivery.sweep(db, short, "sweeper", limit=1) == 1
    took = time.monotonic() - started
    assert 1.0 <= took < 2.0, took
    [shown] = notifications(client, sid)
    [first] = shown["attempts"]
    assert shown["state"] == "pending" and first["status_code"] is None
    assert first["error"] == "timed out after 1 s (127.0.0.1)", first
    assert at(first["retry_at"]) - at(first["finished_at"]) == pytest.approx(0.3, abs=0.01)
    sweep_until(db, short, lambda: notifications(client, sid)[0]["state"] == "delivered",
                timeout=10)
    attempts = notifications(client, sid)[0]["attempts"]
    assert [a["status_code"] for a in attempts] == [None, 200]
    assert at(attempts[1]["started_at"]) >= at(first["retry_at"])
    assert len(hook.arrived) == 2


def test_an_answer_with_oversized_headers_is_a_failed_attempt(
        dripper: Callable[..., Dripper], tmp_path: Path) -> None:
    hook = dripper(("huge",))
    settings = Settings(database_url=f"sqlite:///{tmp_path}/unused.db",
                        notify_allowed_hosts=["127.0.0.1"], notify_timeout_seconds=5.0)
    claimed = ops.Claimed("d" * 32, 1, "me", "local", hook.url, "{}", "whsec_x")
    outcome = delivery.send(claimed, settings)
    assert not outcome.delivered and outcome.status_code is None
    assert outcome.error == ("the answer's status line and headers are longer than "
                             f"{delivery.HEAD_BYTES} bytes (127.0.0.1)"), outcome


def _read_request(sock: socket.socket) -> bytes:
    """A whole HTTP request (head, then Content-Length bytes of body), however the sender split
    it into records: answering after a part and closing would reset the connection under the
    sender before it reads the answer. b"" when the sender closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_https_names_the_host_verifies_its_certificate_and_keeps_the_deadline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over TLS to the checked address: the URL's host is the server name (SNI) and what the
    certificate is verified for, and a handshake or answer dripped byte by byte still ends
    at the deadline."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=hooks.example.com",
                    "-addext", "subjectAltName=DNS:hooks.example.com"],
                   check=True, capture_output=True, timeout=60)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    names: list[str | None] = []
    server.sni_callback = lambda _sock, name, _ctx: names.append(name)
    requests: list[bytes] = []
    answers = ["ok", "drip"]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    # With TLS 1.3 the server may finish its handshake before the client has
                    # refused the certificate: that connection then ends with no request, and
                    # must not take the next connection's answer.
                    request = _read_request(tls)
                    if not request:
                        continue
                    requests.append(request)
                    if answers.pop(0) == "drip":
                        for byte in Dripper.HEAD:
                            tls.sendall(bytes([byte]))
                            time.sleep(0.1)
                    else:
                        tls.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            except OSError:  # the handshake failed, or the sender hung up
                continue

    threading.Thread(target=serve, daemon=True).start()
    settings = Settings(database_url=f"sqlite:///{tmp_path}/unused.db",
                        notify_allowed_hosts=["hooks.example.com"], notify_timeout_seconds=1.0)
    claimed = ops.Claimed("d" * 32, 1, "me", "local",
                          f"https://hooks.example.com:{port}/hook?x=1", "{}", "whsec_x")

    def to_loopback(host: str, port: int, timeout: float) -> list[str]:
        return ["127.0.0.1"]

    try:
        untrusted = delivery.send(claimed, settings, to_loopback)  # the usual CA bundle
        assert not untrusted.delivered and untrusted.error is not None
        assert untrusted.error.startswith("could not connect to 127.0.0.1: ")
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.error, untrusted
        assert names == ["hooks.example.com"] and requests == []
        trusting = ssl.create_default_context(cafile=str(cert))  # checks the host name too
        monkeypatch.setattr(delivery, "_tls", lambda: trusting)
        sent = delivery.send(claimed, settings, to_loopback)
        assert sent.delivered and sent.status_code == 204 and sent.address == "127.0.0.1"
        [request] = requests
        assert request.startswith(b"POST /hook?x=1 HTTP/1.1\r\n"), request
        assert f"Host: hooks.example.com:{port}\r\n".encode() in request
        started = time.monotonic()
        dripped = delivery.send(claimed, settings, to_loopback)
        assert dripped.error == "timed out after 1 s (127.0.0.1)", dripped
        assert time.monotonic() - started < 1.5
    finally:
        listener.close()


def test_the_reaper_requeues_a_lost_job_on_time_while_a_slow_host_is_notified(
        client: TestClient, engine: Engine, settings: Settings,
        dripper: Callable[..., Dripper]) -> None:
    """Six notifications to a host that answers too slowly are due when a worker's lease
    expires: the reaper's batch of attempts stops when a reap is due, so the job is queued
    again after at most half a lease plus one attempt's deadline."""
    from service.jobs import ops as jobs
    from worker.cli import reap_until

    hook = dripper(("drip",) * 50, pause=0.2)
    secret(client)
    for _ in range(6):
        ended = submit(client, hook.url)
        client.post(f"/v1/studies/{ended}/cancel")
    working = client.post("/v1/studies", json=STUDY).json()["id"]
    with Session(engine) as s, s.begin():  # a worker claims one of its jobs, then dies
        lost = jobs.claim(s, "ghost", 0.2)
    assert lost is not None and lost.study_id == working
    reaper = settings.model_copy(update={"lease_seconds": 2.0, "notify_timeout_seconds": 1.0})
    importlib.import_module("worker.loop")  # before the clock starts: reap_until imports it
    stop = threading.Event()
    thread = threading.Thread(target=reap_until, args=(stop, reaper), daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        while True:
            with Session(engine) as s:
                job = s.get(Job, lost.job_id)
                assert job is not None
                if job.state == "queued":
                    break
            assert time.monotonic() - started < 10, "the lost job was not queued again"
            time.sleep(0.05)
        requeued = time.monotonic() - started
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    # The first reap is due a half lease (1 s) after the start; one attempt (1 s) may delay
    # it; the rest is the reaper's start (its engines) and a loaded machine.
    assert requeued < 1.0 + 1.0 + 1.5, requeued
    assert hook.arrived, "the reaper was notifying meanwhile"


def test_a_worker_notifies_only_when_no_job_is_waiting_and_a_few_at_a_time(
        client: TestClient, engine: Engine, settings: Settings,
        receiver: Callable[..., Receiver]) -> None:
    from worker.loop import WORKER_NOTIFY_LIMIT, Worker

    hook = receiver()
    secret(client)
    for _ in range(3):
        ended = submit(client, hook.url)
        client.post(f"/v1/studies/{ended}/cancel")
    waiting = client.post("/v1/studies", json=STUDY).json()["id"]  # its jobs are queued
    worker = Worker(settings, name="busy-worker")
    try:
        worker.maybe_notify()
        assert hook.received == []  # a job is waiting: training comes first
        assert client.post(f"/v1/studies/{waiting}/cancel").status_code == 200
        time.sleep(0.1)  # notify_poll_seconds is 0.05
        worker.maybe_notify()
        assert len(hook.received) == WORKER_NOTIFY_LIMIT == 2
        time.sleep(0.1)
        worker.maybe_notify()
        assert len(hook.received) == 3
    finally:
        worker.engine.dispose()
        worker.heartbeat_engine.dispose()


# -- (6) what a receiver checks ---------------------------------------------------------------
MALFORMED_SIGNATURES = ["", "t=", "v1=abc", "t=abc,v1=abc", "t=1.5,v1=abc", ",", "=",
                        "t={now}", "t={now},v1=", "t={now},v1=\u00e9", "t={now},v1=\u00e9\u00e9",
                        "t=\u0661\u0662,v1=abc", "t={now},v1=zz", "garbage", "t={now}v1=abc"]


def test_a_malformed_signature_header_is_refused_not_raised() -> None:
    key, body, now = "whsec_test", b'{"delivery_id": "x"}', int(time.time())
    good = ops.signature(key, now, body)
    assert verify_signature(key, body, good)
    for header in MALFORMED_SIGNATURES:
        assert verify_signature(key, body, header.format(now=now)) is False, header
    digest = good.split("v1=")[1]
    assert verify_signature(key, body, f"t={now},v1={digest}\u00e9") is False


def readme_receiver() -> dict[str, Any]:
    """The README's receiver example (the python block defining `genuine`), run."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [code] = [b for b in re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
              if "def genuine(" in b]
    names: dict[str, Any] = {}
    exec(code, names)  # our own README's example
    return names


def test_the_readme_receiver_refuses_malformed_headers_and_ignores_replays() -> None:
    """The documented receiver: a malformed header is refused (False, no exception), and a
    request replayed within the timestamp window, with or without another X-Lrsearch-Delivery
    header, is recognised by the signed delivery_id in its body and not processed again."""
    example = readme_receiver()
    genuine, handle = example["genuine"], example["handle"]
    key, now = "whsec_test", int(time.time())
    body = json.dumps({"event": "study.ended", "delivery_id": "7d11a047",
                       "study": {"id": "s1"}}).encode()
    good = ops.signature(key, now, body)
    assert genuine(key, body, good) is True
    assert genuine(key, body + b" ", good) is False
    for header in MALFORMED_SIGNATURES:
        assert genuine(key, body, header.format(now=now)) is False, header
    processed: list[dict[str, Any]] = []
    seen: set[str] = set()
    assert handle(key, body, good, seen, processed.append) == 200
    # The same request again, seconds later: inside the window, so the signature holds.
    later = ops.signature(key, now + 5, body)
    assert handle(key, body, later, seen, processed.append) == 200
    assert handle(key, body, good, seen, processed.append) == 200
    assert [p["delivery_id"] for p in processed] == ["7d11a047"]  # processed once
    assert handle(key, body, "t=1,v1=\u00e9", seen, processed.append) == 401
    assert handle("whsec_other", body, good, seen, processed.append) == 401


# -- (7) claiming, deleting, settings -------------------------------------------------------
def test_expired_leases_and_due_attempts_are_claimed_oldest_first(
        client: TestClient, engine: Engine, db: Db) -> None:
    """A lease expired a minute ago comes before attempts due half a minute ago, which come
    before a lease expired a second ago, on both databases (NULL next_attempt_at, as an
    expired lease has, sorts first on SQLite and last on PostgreSQL)."""
    from service.db import utcnow

    secret(client)
    sids = [submit(client, "http://127.0.0.1:9/hook") for _ in range(7)]
    for sid in sids:
        client.post(f"/v1/studies/{sid}/cancel")
    with Session(engine) as s:
        ids = {row.study_id: row.id for row in s.scalars(select(WebhookDelivery))}
    order = [ids[sid] for sid in sids]
    now = utcnow()
    with Session(engine) as s, s.begin():
        for i, delivery_id in enumerate(order):
            if i in (0, 6):  # sent by a sender that died: lease expired 60 s / 1 s ago
                values: dict[str, Any] = dict(
                    state="sending", attempts=1, lease_owner="ghost", next_attempt_at=None,
                    lease_expires_at=now - timedelta(seconds=60 if i == 0 else 1))
            else:  # due 30 s ago, 29 s ago, ...
                values = dict(next_attempt_at=now - timedelta(seconds=31 - i))
            s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                      .values(**values))
    claimed = []
    for _ in order:
        got = db(lambda s: ops.claim(s, "sweeper", 30.0, 5))
        assert got is not None
        claimed.append(got.delivery_id)
    assert claimed == order
    assert db(lambda s: ops.claim(s, "sweeper", 30.0, 5)) is None


def test_a_study_deleted_right_after_it_ends_is_still_notified(
        client: TestClient, engine: Engine, db: Db, settings: Settings,
        receiver: Callable[..., Receiver]) -> None:
    hook = receiver()
    secret(client)
    sid = submit(client, hook.url, name="short-lived")
    assert client.post(f"/v1/studies/{sid}/cancel").status_code == 200
    assert client.delete(f"/v1/studies/{sid}").status_code == 204  # before any sweep
    assert client.get(f"/v1/studies/{sid}/notifications").status_code == 404
    sweep_until(db, settings, lambda: len(hook.received) == 1, timeout=10)
    payload = json.loads(hook.received[0].body)
    assert payload["study"]["id"] == sid and payload["study"]["status"] == "cancelled"
    assert payload["study"]["name"] == "short-lived"
    with Session(engine) as s:
        [row] = s.scalars(select(WebhookDelivery))
        assert row.study_id is None and row.state == "delivered"


@pytest.mark.parametrize("entry", ["hooks.lan:8080", "http://hooks.lan", "https://hooks.lan/",
                                   "hooks.lan/in", "[::1]:8080", "127.0.0.1:80", "user@hooks.lan",
                                   "hooks lan", "*.", "*.*.lan", "a*.lan", "*hooks.lan",
                                   "hooks_lan?x", "[hooks.lan]", "ho\u00f6ks.lan"])
def test_a_malformed_allow_list_entry_is_refused_when_settings_load(entry: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({"notify_allowed_hosts": f"public, {entry}"})
    message = str(caught.value)
    assert "LRSEARCH_NOTIFY_ALLOWED_HOSTS" in message and repr(entry.lower()) in message, \
        message


def test_well_formed_allow_list_entries_load_and_allow_any_port() -> None:
    entries = "Public, Hooks.LAN, hooks.lan., 127.0.0.1, [::1], ::1, *.example.com, 10.0.0.7"
    loaded = Settings.model_validate({"notify_allowed_hosts": entries}).notify_allowed_hosts
    assert loaded == ["public", "hooks.lan", "hooks.lan.", "127.0.0.1", "[::1]", "::1",
                      "*.example.com", "10.0.0.7"]
    for url in ("http://hooks.lan:8080/in", "https://hooks.lan/", "http://hooks.lan:1/"):
        assert urls.check_target(url, loaded, 1.0, lambda *_: ["10.0.0.7"]).host == "hooks.lan"


# -- (8) resolving at submission --------------------------------------------------------------
def test_resolving_at_submission_is_short_and_holds_few_threads(
        settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DNS server that never answers (getaddrinfo blocks) costs a submission at most
    urls.SUBMIT_RESOLVE_SECONDS, however long LRSEARCH_NOTIFY_TIMEOUT_SECONDS is, and the
    blocked lookups hold at most urls.MAX_LOOKUPS threads: a later one waits for a free
    thread within its own time limit, then is refused."""
    release = threading.Event()

    def never_answers(*args: Any, **kwargs: Any) -> Any:
        release.wait(60)
        raise socket.gaierror("no answer")

    monkeypatch.setattr(socket, "getaddrinfo", never_answers)
    slow = settings.model_copy(update={"notify_timeout_seconds": 30.0,
                                       "notify_allowed_hosts": ["public"]})

    def resolving() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("resolve ")]

    try:
        with TestClient(create_app(slow)) as client:
            secret(client)
            started = time.monotonic()
            r = client.post("/v1/studies", json={**STUDY, "notify": {
                "url": "https://hangs.example.com/hook"}})
            took = time.monotonic() - started
            assert r.status_code == 422 and r.json()["field"] == "notify.url", r.text
            assert "the host 'hangs.example.com' did not resolve within 2 s" \
                in r.json()["detail"], r.text
            assert took < urls.SUBMIT_RESOLVE_SECONDS + 1.5, took
        for i in range(urls.MAX_LOOKUPS + 3):
            with pytest.raises(urls.Refused, match=r"did not resolve within 0\.2 s"):
                urls.resolve(f"hangs-{i}.example.com", 443, 0.2)
        assert len(resolving()) == urls.MAX_LOOKUPS
        started = time.monotonic()
        with pytest.raises(urls.Refused, match="lookups are already waiting"):
            urls.resolve("one-more.example.com", 443, 0.2)
        assert time.monotonic() - started < 0.5
    finally:
        release.set()
    for t in resolving():
        t.join(10)
    assert resolving() == []
