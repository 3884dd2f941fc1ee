"""The web page acts, in a real headless Chromium against the real server and worker: a study
and a range test submitted from their forms run to the end; a bad field comes back with the
API's message next to it and nothing is created; a running study is cancelled and a study and a
range test deleted with their buttons; forms posted from another site's page are refused (a
foreign Origin by the first layer; a same-host page on another port, which passes that layer
and gets the browser's cookies sent, by the CSRF token); no page has a console error."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.e2e.browser import Browser, find_chromium
from tests.e2e.conftest import Server

CHROMIUM = find_chromium()
# .ci/run installs Debian's chromium and fails if these tests skip.
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                "(apt-get install chromium)")

FOREIGN = "evil.example"  # resolved to 127.0.0.1 by this browser only


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    assert CHROMIUM is not None
    b = Browser(CHROMIUM, tmp_path_factory.mktemp("chromium-forms"),
                args=[f"--host-resolver-rules=MAP {FOREIGN} 127.0.0.1"])
    yield b
    b.close()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not in {timeout}s"
        time.sleep(0.5)
    return found


def api(server: Server, path: str) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=30)


def n_studies(server: Server) -> int:
    return int(api(server, "/v1/studies?limit=1").json()["total"])


def only_http_error(problems: list[str], status: int, url: str, *also: str) -> None:
    """The page's own error status, reported by the network and the log, and nothing else
    (but for the URLs in `also`)."""
    assert f"HTTP {status}: {url}" in problems, problems
    assert all(p.endswith((url, *also)) for p in problems), problems


def test_the_index_links_to_the_forms(browser: Browser, server: Server) -> None:
    assert browser.load(f"{server.url}/ui") == []
    assert browser.follow('a[href="/ui/studies/new"]') == []
    assert browser.path() == "/ui/studies/new"
    # Each family's default search space is shown next to its field.
    assert browser.text_of('[id="default-cosine"]').splitlines() == [
        "peak_lr: 0.0001 to 1, log", "alpha: 0 to 0.2", "warmup_epochs: 0 to 0.2 × epochs",
        "warmup_start_lr = 0.0"]
    assert browser.evaluate("document.querySelector('[name=\"search_space.cosine\"]')"
                            ".placeholder") == '{"peak_lr": {"low": 0.0001, "high": 1.0, ' \
                                               '"log": true}}'
    assert browser.load(f"{server.url}/ui") == []
    assert browser.follow('a[href="/ui/range-tests/new"]') == []
    assert browser.path() == "/ui/range-tests/new"


def test_a_study_submitted_from_the_form_runs_to_the_end(browser: Browser,
                                                         server: Server) -> None:
    assert browser.load(f"{server.url}/ui/studies/new") == []
    browser.type('[name="name"]', "ui-form-study")
    browser.type('[name="epochs"]', "1")
    browser.type('[name="batch_size"]', "64")
    browser.type('[name="n_trials"]', "2")
    browser.type('[name="objective.metric"]', "val_accuracy")
    browser.choose('[name="objective.direction"]', "maximize")
    browser.choose('[name="optimizer"]', "momentum")
    browser.click("#family-cosine")
    browser.click("#family-constant")  # a cross-family search (and so no extra baseline)
    browser.type('[name="search_space.cosine"]', '{"peak_lr": {"low": 0.05, "high": 0.5}}')
    assert browser.follow("#submit") == []
    path = browser.path()
    assert path.startswith("/ui/studies/"), path
    sid = path.removeprefix("/ui/studies/")
    study = api(server, f"/v1/studies/{sid}").json()
    assert study["name"] == "ui-form-study"
    assert study["families"] == ["constant", "cosine"]  # in the catalog's order
    assert study["request"]["epochs"] == 1 and study["request"]["n_trials"] == 2
    assert study["request"]["optimizer"] == {"name": "momentum"}
    assert study["request"]["objective"] == {"metric": "val_accuracy", "direction": "maximize"}
    assert study["request"]["search_space"] == {"cosine": {"peak_lr": {"low": 0.05,
                                                                       "high": 0.5}}}
    done = wait_for("the study to finish", lambda: (
        s := api(server, f"/v1/studies/{sid}").json())["status"] in (
            "succeeded", "failed", "cancelled") and s)
    assert done["status"] == "succeeded" and done["counts"]["complete"] == 2, \
        (done, server.logs())
    assert browser.load(f"{server.url}{path}") == []
    page = browser.text_of("main")
    assert "ui-form-study succeeded" in page and "2/2 finished" in page
    assert "Best schedule" in page


def test_a_bad_field_shows_the_apis_message_next_to_it(browser: Browser,
                                                       server: Server) -> None:
    before = n_studies(server)
    url = f"{server.url}/ui/studies/new"
    assert browser.load(url) == []
    browser.type('[name="epochs"]', "0")
    browser.type('[name="n_trials"]', "2")
    browser.click("#family-cosine")
    only_http_error(browser.follow("#submit"), 422, url)
    body = {"families": ["cosine"], "dataset": "digits", "model": {"name": "mlp"},
            "optimizer": {"name": "sgd"}, "epochs": 0, "batch_size": 32, "n_trials": 2}
    refused = httpx.post(f"{server.url}/v1/studies", json=body, timeout=30)
    assert refused.status_code == 422
    assert browser.text_of('[id="error-epochs"]') == refused.json()["detail"] == \
        "epochs: Input should be greater than or equal to 1 (received 0)"
    # What was typed is still there, and the field is marked.
    assert browser.field('[name="epochs"]') == "0" and browser.field("#family-cosine") is True
    assert browser.evaluate("document.querySelector('[name=\"epochs\"]')"
                            ".getAttribute('aria-invalid')") == "true"
    assert "The study was not created." in browser.text_of("#errors")

    # Fixed, and another mistake: a parameter the family does not have.
    browser.type('[name="epochs"]', "1")
    overrides = '{"peak_lr": {"low": 0.05, "high": 0.5}, "nope": {"value": 1}}'
    browser.type('[name="search_space.cosine"]', overrides)
    only_http_error(browser.follow("#submit"), 422, url)
    refused = httpx.post(f"{server.url}/v1/studies", timeout=30, json={
        **body, "epochs": 1,
        "search_space": {"cosine": {"peak_lr": {"low": 0.05, "high": 0.5},
                                    "nope": {"value": 1}}}})
    assert refused.status_code == 422 and refused.json()["field"] == "search_space.cosine.nope"
    assert browser.text_of('[id="error-search_space.cosine"]') == refused.json()["detail"]
    assert browser.field('[name="search_space.cosine"]') == overrides
    assert browser.evaluate("document.querySelectorAll('.field-error').length") == 1
    assert n_studies(server) == before


@pytest.fixture(scope="module")
def form_range_test(browser: Browser, server: Server) -> dict[str, Any]:
    """A range test submitted from its form and waited on."""
    assert browser.load(f"{server.url}/ui/range-tests/new") == []
    browser.type('[name="min_lr"]', "1e-4")
    browser.type('[name="max_lr"]', "10")
    browser.type('[name="num_iter"]', "30")
    assert browser.follow("#submit") == []
    path = browser.path()
    assert path.startswith("/ui/range-tests/"), path
    tid = path.removeprefix("/ui/range-tests/")
    done: dict[str, Any] = wait_for("the range test to finish", lambda: (
        t := api(server, f"/v1/range-tests/{tid}").json())["status"] in (
            "succeeded", "failed", "cancelled") and t)
    assert done["status"] == "succeeded", (done, server.logs())
    assert done["request"]["min_lr"] == 1e-4 and done["request"]["num_iter"] == 30
    return done


def test_a_range_test_submitted_from_the_form_finishes(browser: Browser, server: Server,
                                                       form_range_test: dict[str, Any]
                                                       ) -> None:
    assert browser.load(f"{server.url}/ui/range-tests/{form_range_test['id']}") == []
    page = browser.text_of("main")
    assert "succeeded" in page and "Suggested learning rates" in page
    # Its bounds feed a new study's form.
    assert browser.follow("#new-study") == []
    assert browser.field('[name="range_test_id"]') == form_range_test["id"]


def test_cancel_a_running_study_then_delete_it(browser: Browser, server: Server) -> None:
    with server.client() as c:  # long enough to be caught running
        sid = c.submit({"name": "ui-cancel-me", "family": "constant", "dataset": "digits",
                        "epochs": 200, "batch_size": 64, "n_trials": 2})["id"]
    wait_for("a running trial", lambda: api(server, f"/v1/studies/{sid}").json()[
        "counts"]["running"] > 0)
    assert browser.load(f"{server.url}/ui/studies/{sid}") == []
    assert browser.follow("#cancel") == []
    assert browser.path() == f"/ui/studies/{sid}"
    assert "ui-cancel-me cancelled" in browser.text_of("main")
    assert api(server, f"/v1/studies/{sid}").json()["status"] == "cancelled"
    # The running trial stops at its next epoch; then the study goes.
    wait_for("the trial to stop", lambda: api(server, f"/v1/studies/{sid}").json()[
        "counts"]["running"] == 0)
    assert browser.load(f"{server.url}/ui/studies/{sid}") == []
    assert browser.follow("#delete") == []
    assert browser.path() == f"/ui/studies/{sid}/delete"
    assert "cannot be undone" in browser.text_of("main")
    assert browser.follow("#confirm-delete") == []
    assert browser.path() == "/ui"
    assert api(server, f"/v1/studies/{sid}").status_code == 404
    assert "ui-cancel-me" not in browser.text_of("main")


def test_delete_a_range_test_with_its_button(browser: Browser, server: Server,
                                             form_range_test: dict[str, Any]) -> None:
    tid = form_range_test["id"]
    assert browser.load(f"{server.url}/ui/range-tests/{tid}") == []
    assert browser.follow("#delete") == []
    assert browser.follow("#confirm-delete") == []
    assert browser.path() == "/ui"
    assert api(server, f"/v1/range-tests/{tid}").status_code == 404
    assert tid not in browser.text_of("main")


@contextlib.contextmanager
def other_site(target: str) -> Iterator[int]:
    """A page on another port of this machine holding a form that posts a study to
    `target`, as a page of another site would: without our CSRF token."""
    page = f"""<!doctype html><html><head><link rel="icon" href="data:,"></head><body>
<form method="post" action="{target}/ui/studies/new">
  <input name="families" value="constant"><input name="dataset" value="digits">
  <input name="epochs" value="1"><input name="n_trials" value="1">
  <button type="submit" id="go">Win a prize</button>
</form></body></html>""".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_form_posts_from_another_site_are_refused(browser: Browser, server: Server) -> None:
    before = n_studies(server)
    target = f"{server.url}/ui/studies/new"
    assert browser.load(target) == []  # this browser has our cookie now
    with other_site(server.url) as port:
        # A foreign site: its Origin is refused before anything else is looked at.
        assert browser.load(f"http://{FOREIGN}:{port}/") == []
        # (a JSON answer: the browser asks for the icon an HTML page of ours names inline)
        only_http_error(browser.follow("#go"), 403, target, f"{server.url}/favicon.ico")
        assert f"Cross-site request refused: the Origin header names `http://{FOREIGN}:" \
               f"{port}`" in browser.text_of("body")
        # A page on another port of the same host is the same site: its Origin names an
        # allowed host, and the browser sends our SameSite=Strict cookie along. It is another
        # origin, though (one that could plant a cookie of its own): the form check refuses it.
        assert browser.load(f"http://127.0.0.1:{port}/") == []
        only_http_error(browser.follow("#go"), 403, target)
        assert "Form refused" in browser.text_of("h1")
        assert f"sent by a page of 'http://127.0.0.1:{port}', not of this server" \
            in browser.text_of("main")
    # The same post from our own page with the Origin it sends, but without the token; and
    # with our page's token from a foreign Origin.
    with httpx.Client(base_url=server.url, timeout=30) as c:
        page = c.get("/ui/studies/new")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        form = {"families": "constant", "dataset": "digits", "epochs": "1", "n_trials": "1"}
        r = c.post("/ui/studies/new", data=form, headers={"Origin": server.url})
        assert r.status_code == 403 and "Form refused" in r.text
        r = c.post("/ui/studies/new", data={**form, "csrf_token": token},
                   headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "Cross-site request refused" in r.json()["detail"]
    assert n_studies(server) == before
