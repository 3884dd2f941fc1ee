"""Where requests may come from and what errors may show: only allowed Host names are served
(health probes excepted), state-changing requests from another site are refused, a study's
name never breaks its plots, and no error or failure reason shows a server path."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from lrsearch import datasets
from lrsearch.errors import redact_paths
from service.config import Settings
from service.main import create_app
from service.studies.models import Study
from tests.processes import LRSEARCH, free_port, wait_ready
from tests.service.helpers import STUDY, count, run_trial
from tests.service.test_auth import bearer, make_key
from worker.child import _failure

DEFAULT_HOSTS = Settings.model_fields["allowed_hosts"].get_default()
# An absolute path as it would appear in a message: after a start, a space, a quote or a
# bracket, a "/" and at least one folder.
ABSOLUTE = re.compile(r"(^|[\s'\"(\[=:])/[\w.+-]+/")


def assert_no_server_path(text: str, *folders: Path) -> None:
    for folder in (*folders, Path.home(), Path(sys.prefix)):
        assert str(folder) not in text, (str(folder), text)
    assert ABSOLUTE.search(text) is None, text


# -- Host --------------------------------------------------------------------------------


def test_only_allowed_hosts_are_served_except_health_probes(settings: Settings,
                                                           engine: Engine) -> None:
    app = create_app(settings.model_copy(update={"allowed_hosts": DEFAULT_HOSTS}))
    with TestClient(app, base_url="http://localhost:8000") as c:
        for base in ("http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000",
                     "http://LOCALHOST"):
            assert c.get(f"{base}/v1/schedules").status_code == 200, base
        # DNS rebinding: a page on attacker.example resolves its own name to 127.0.0.1, so
        # the browser sends the attacker's name as Host.
        for base in ("http://attacker.example:8000", "http://testserver",
                     "http://localhost.attacker.example"):
            r = c.get(f"{base}/v1/schedules")
            assert r.status_code == 400, base
            assert r.json()["type"] == "bad_host" and r.json()["field"] == "Host"
            assert "LRSEARCH_ALLOWED_HOSTS" in r.json()["detail"]
            assert f"Host `{base.removeprefix('http://')}`" in r.json()["detail"]
            assert c.post(f"{base}/v1/studies", json=STUDY).status_code == 400
        assert count(engine, Study) == 0
        # Kubernetes probes, and Prometheus scrapes, use the pod's IP as Host.
        assert c.get("http://10.1.2.3:8000/healthz").json() == {"status": "ok"}
        assert c.get("http://10.1.2.3:8000/readyz").status_code == 200
        assert c.get("http://10.1.2.3:8000/metrics").status_code == 200


@pytest.mark.parametrize("allowed, host, served", [
    (["*"], "anything.example", True),
    (["*.example.com"], "lrsearch.example.com", True),
    (["*.example.com"], "example.com", False),
    (["*.example.com"], "evil-example.com", False),
    (["lrsearch.example.com"], "lrsearch.example.com:443", True),
    (["lrsearch.example.com"], "other.example.com", False),
])
def test_allowed_hosts_setting(settings: Settings, engine: Engine, allowed: list[str],
                               host: str, served: bool) -> None:
    with TestClient(create_app(settings.model_copy(update={"allowed_hosts": allowed})),
                    base_url=f"http://{host}") as c:
        assert (c.get("/v1/schedules").status_code == 200) is served


def test_allowed_hosts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LRSEARCH_ALLOWED_HOSTS", raising=False)
    assert Settings().allowed_hosts == ["localhost", "127.0.0.1", "[::1]"]
    monkeypatch.setenv("LRSEARCH_ALLOWED_HOSTS", "lrsearch.example.com, *.Corp.example")
    assert Settings().allowed_hosts == ["lrsearch.example.com", "*.corp.example"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_lrsearch_api_serves_the_address_it_binds_to(settings: Settings, engine: Engine,
                                                    tmp_path: Path) -> None:
    """A real `lrsearch api --host 127.0.0.2`: that address is served, a foreign Host is
    not, and health probes answer whatever the Host."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.update(LRSEARCH_DATABASE_URL=settings.database_url,
               LRSEARCH_DATA_DIR=str(settings.data_dir))
    log = tmp_path / "api.log"
    url = f"http://127.0.0.2:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([LRSEARCH, "api", "--host", "127.0.0.2", "--port", str(port)],
                                env=env, stdout=out, stderr=out)
    try:
        wait_ready(url, proc, log)
        assert httpx.get(f"{url}/v1/schedules").status_code == 200
        foreign = {"Host": "attacker.example"}
        r = httpx.get(f"{url}/v1/schedules", headers=foreign)
        assert r.status_code == 400 and "attacker.example" in r.json()["detail"]
        assert httpx.get(f"{url}/healthz", headers=foreign).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


# -- Origin ------------------------------------------------------------------------------


def test_state_changes_from_another_site_are_refused(client: TestClient,
                                                     engine: Engine) -> None:
    """Without keys anyone local is the `local` tenant, so a page on another site must not
    be able to make the browser submit, cancel or delete work."""
    sid = client.post("/v1/studies", json=STUDY).json()["id"]
    foreign = ({"Origin": "https://evil.example"}, {"Origin": "null"},
               {"Origin": "http://testserver.evil.example"},
               {"Referer": "https://evil.example/attack.html"})
    for headers in foreign:
        for method, path in (("POST", "/v1/studies"), ("POST", f"/v1/studies/{sid}/cancel"),
                             ("DELETE", f"/v1/studies/{sid}"),
                             ("POST", "/v1/schedules/cosine/preview")):
            r = client.request(method, path, json=STUDY, headers=headers)
            assert r.status_code == 403, (method, path, headers)
            assert r.json()["type"] == "forbidden"
            assert "Cross-site request refused" in r.json()["detail"]
    assert count(engine, Study) == 1
    assert client.get(f"/v1/studies/{sid}").json()["status"] == "queued"
    # Reads are not changes; the same site, and clients sending no Origin, go through.
    assert client.get("/v1/studies", headers={"Origin": "https://evil.example"}
                      ).status_code == 200
    assert client.post("/v1/studies", json=STUDY,
                       headers={"Origin": "http://testserver"}).status_code == 201
    assert client.post("/v1/studies", json=STUDY,
                       headers={"Referer": "http://testserver/ui"}).status_code == 201
    assert client.post("/v1/studies", json=STUDY).status_code == 201


def test_bearer_clients_without_origin_are_unaffected(client: TestClient,
                                                      engine: Engine) -> None:
    key = make_key(engine, "team-a")
    assert client.post("/v1/studies", json=STUDY, headers=bearer(key)).status_code == 201
    r = client.post("/v1/studies", json=STUDY,
                    headers={**bearer(key), "Origin": "https://evil.example"})
    assert r.status_code == 403


# -- Plots -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cost $5 $x^2$", "$x^{2$ and $\\foo$", "$_$"])
def test_a_study_name_with_dollars_plots(client: TestClient, engine: Engine,
                                         name: str) -> None:
    body = {**STUDY, "name": name, "families": ["one_cycle", "cosine"]}
    del body["family"]
    sid = client.post("/v1/studies", json=body).json()["id"]
    run_trial(engine, sid, 0, "one_cycle", {"max_lr": 0.1}, 0.7)
    run_trial(engine, sid, 1, "cosine", {"peak_lr": 0.1}, 0.6)
    for kind in ("lr_curves", "history", "leaderboard"):
        for path in (f"/v1/studies/{sid}/plots/{kind}.png",
                     f"/ui/studies/{sid}/plots/{kind}.png"):
            r = client.get(path)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["content-type"] == "image/png"
            assert r.content.startswith(b"\x89PNG")
    page = client.get(f"/ui/studies/{sid}")
    assert page.status_code == 200


# -- Paths -------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset, needed", [("mnist", "mnist.npz"),
                                             ("cifar10", "cifar-10-python.tar.gz"),
                                             ("fashion_mnist", "fashion-mnist")])
def test_a_missing_dataset_error_names_no_server_path(
        client: TestClient, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, dataset: str, needed: str) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    r = client.post("/v1/studies", json={**STUDY, "dataset": dataset})
    assert r.status_code == 422 and r.json()["field"] == "dataset"
    detail = r.json()["detail"]
    # Still says what to do: which file, which folders (by their role), where to get it.
    assert f"`{needed}`" in detail and "<data_dir>" in detail and "<keras_home>" in detail
    assert "https://" in detail
    assert_no_server_path(detail, settings.data_dir.resolve(), tmp_path)
    r = client.post("/v1/range-tests", json={"dataset": dataset})
    assert r.status_code == 422
    assert_no_server_path(r.json()["detail"], settings.data_dir.resolve(), tmp_path)


def test_a_failure_reason_names_no_server_path(client: TestClient, engine: Engine,
                                               settings: Settings, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial that failed in the worker (here: its dataset file vanished, and a file the
    training opened was missing) shows its reason and traceback without the server's paths."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    sid = client.post("/v1/studies", json=STUDY).json()["id"]
    reasons = []
    for fail in (lambda: datasets.load("mnist", data_dir=settings.data_dir),
                 lambda: (settings.data_dir / "uploads" / "team" / "x.npz").read_bytes()):
        try:
            fail()
        except Exception as exc:  # what the worker's child does with any failure
            _, payload = _failure(exc)
        reasons.append(f"{payload['kind']}: {payload['message']}\n{payload['traceback']}")
    assert "Traceback" in reasons[1] and "x.npz" in reasons[1]
    for slot, reason in enumerate(reasons):
        run_trial(engine, sid, slot, "one_cycle", {"max_lr": 0.1}, None, state="failed",
                  reason=reason)
    for trial in client.get(f"/v1/studies/{sid}/trials").json()["items"]:
        assert trial["state"] == "failed" and trial["failure_reason"]
        assert_no_server_path(trial["failure_reason"], settings.data_dir.resolve(), tmp_path)


def test_stored_reasons_are_redacted_on_the_way_out(client: TestClient, engine: Engine,
                                                    settings: Settings) -> None:
    """A reason recorded before redaction existed, or by another path, is still cleaned."""
    sid = client.post("/v1/studies", json=STUDY).json()["id"]
    run_trial(engine, sid, 0, "one_cycle", {"max_lr": 0.1}, None, state="failed",
              reason="error: FileNotFoundError: '/srv/lrsearch/data/uploads/t/x.npz'")
    [trial] = client.get(f"/v1/studies/{sid}/trials").json()["items"]
    assert trial["failure_reason"] == "error: FileNotFoundError: 'x.npz'"
    page = client.get(f"/ui/studies/{sid}").text
    assert "/srv/lrsearch" not in page


# -- redact_paths ------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("No such file: '/srv/data/uploads/t/x.npz'", "No such file: '<data_dir>/uploads/t/x.npz'"),
    ('File "/usr/lib/python3.11/site-packages/keras/src/trainer.py", line 3, in fit',
     'File "trainer.py", line 3, in fit'),
    ("not in any of: /srv/data, /srv/data/datasets, /home/me/.keras/datasets.",
     "not in any of: <data_dir>, <data_dir>/datasets, <keras_home>/datasets."),
    ("(/tmp/x/y.txt)", "(y.txt)"),
    ("file:/srv/data/x.npz and tf:/srv/secret/dir and file:///etc/passwd",
     "file:<data_dir>/x.npz and tf:dir and file://passwd"),
    ("/srv/database/x", "x"),  # a sibling of a root with the same prefix is not under it
    # Left alone: URLs, relative paths, ratios, labels, already redacted text, a lone slash.
    ("see https://example.com/a/b.npz", "see https://example.com/a/b.npz"),
    ("a/b/c and 3/4 and loss/lr and x / y", "a/b/c and 3/4 and loss/lr and x / y"),
    ("<data_dir>/uploads/x.npz and ~/.keras/datasets", "<data_dir>/uploads/x.npz and "
     "~/.keras/datasets"),
    ("", ""),
])
def test_redact_paths(text: str, expected: str) -> None:
    roots: dict[str | os.PathLike[str], str] = {"/srv/data": "<data_dir>",
                                                 Path("/home/me/.keras"): "<keras_home>"}
    assert redact_paths(text, roots) == expected
    assert redact_paths(expected, roots) == expected  # twice changes nothing


def test_redact_paths_keeps_none() -> None:
    assert redact_paths(None) is None
