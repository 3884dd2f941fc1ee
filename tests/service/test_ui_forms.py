"""The web page's forms against the app (the end-to-end run in Chromium is
tests/e2e/test_ui_forms.py):

- CSRF: a form page sets a strict HttpOnly cookie (or, logged in, uses the session) and its
  forms carry the HMAC of it; a POST without the token, with a wrong one, another browser's,
  one made before logging in, or without the cookie is refused (403, a readable page) and
  changes nothing, and a foreign Origin is refused before the token is even looked at;
- a refused form comes back with what was typed and, next to the field it names, the very
  message POST /v1/studies (or /v1/range-tests) gives for the same body; nothing is stored;
- a good form creates what the API would (a range test's bounds applied as the API applies
  them), a double submit creates one study, and Cancel / Delete do what the API's do.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from html import unescape
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.range_tests.models import RangeTest
from service.studies.models import Study
from service.ui import csrf
from tests.service.helpers import count
from tests.service.test_auth import make_key

FORM = {"dataset": "digits", "model": "mlp", "optimizer": "sgd", "epochs": "3",
        "batch_size": "32", "n_trials": "2", "families": ["cosine"]}
API = {"families": ["cosine"], "dataset": "digits", "model": {"name": "mlp"},
       "optimizer": {"name": "sgd"}, "epochs": 3, "batch_size": 32, "n_trials": 2,
       "baseline": {"enabled": False}}


def token_on(page: str) -> str:
    """The form's hidden CSRF token."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)


def form_token(client: TestClient, path: str = "/ui/studies/new") -> str:
    r = client.get(path)
    assert r.status_code == 200, r.text
    return token_on(r.text)


def field_messages(page: str) -> dict[str, list[str]]:
    """The messages shown next to each field, by field name."""
    return {name: [unescape(m) for m in re.findall(r"<p>(.*?)</p>", body)]
            for name, body in re.findall(
                r'<div class="field-error" id="error-([^"]+)"[^>]*>(.*?)</div>', page)}


def general_messages(page: str) -> list[str]:
    box = re.search(r'<div class="error-box" id="errors".*?</div>', page, re.S)
    return [unescape(m) for m in re.findall(r"<li>(.*?)</li>", box.group(0))] if box else []


def post_form(client: TestClient, path: str, data: dict[str, Any], **headers: str) -> Any:
    return client.post(path, data=data, headers=headers, follow_redirects=False)


# -- CSRF ----------------------------------------------------------------------------------------


def test_a_form_page_sets_a_strict_cookie_and_its_forms_carry_its_hmac(
        client: TestClient) -> None:
    assert "set-cookie" not in client.get("/ui").headers  # no form there: no cookie
    first = client.get("/ui/studies/new")
    # A page that acts is never framed by another site (clickjacking).
    assert first.headers["x-frame-options"] == "DENY"
    assert first.headers["content-security-policy"] == "frame-ancestors 'none'"
    cookie = first.headers["set-cookie"].lower()
    assert cookie.startswith("lrsearch_csrf=") and "httponly" in cookie
    assert "samesite=strict" in cookie and "path=/ui" in cookie and "secure" not in cookie
    secret = client.cookies["lrsearch_csrf"]
    token = token_on(first.text)
    assert len(secret) >= 43 and secret not in first.text  # the page holds only the HMAC
    assert token == hmac.new(secret.encode(), b"lrsearch web form v1",
                             hashlib.sha256).hexdigest()
    # The same browser keeps its cookie and gets the same token on every form page.
    again = client.get("/ui/range-tests/new")
    assert "set-cookie" not in again.headers and token_on(again.text) == token


def test_the_cookie_is_secure_over_https(client: TestClient) -> None:
    with TestClient(client.app, base_url="https://testserver") as c:
        assert "; secure" in c.get("/ui/studies/new").headers["set-cookie"].lower()


def refused(r: Any, reason: str) -> None:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "Form refused" in r.text and reason in unescape(r.text), r.text


def test_posts_without_the_right_token_are_refused_and_change_nothing(
        client: TestClient, engine: Engine) -> None:
    token = form_token(client)
    other = TestClient(client.app)
    theirs = form_token(other)
    assert theirs != token
    secret = client.cookies["lrsearch_csrf"]
    for data, reason in (({**FORM}, "`csrf_token` field is missing"),
                         ({**FORM, "csrf_token": ""}, "`csrf_token` field is missing"),
                         ({**FORM, "csrf_token": "0" * 64}, "does not match"),
                         ({**FORM, "csrf_token": theirs}, "does not match"),
                         ({**FORM, "csrf_token": secret}, "does not match"),
                         ({**FORM, "csrf_token": token.upper()}, "does not match"),
                         ({**FORM, "csrf_token": token + "é"}, "does not match")):
        refused(post_form(client, "/ui/studies/new", data), reason)
    # The right token with no cookie (a cookie-less client, or another site's request).
    bare = TestClient(client.app)
    refused(post_form(bare, "/ui/studies/new", {**FORM, "csrf_token": token}),
            "sent no valid `lrsearch_session` or `lrsearch_csrf` cookie")
    # A forged short cookie is not a secret.
    bare.cookies.set("lrsearch_csrf", "x", path="/ui")
    refused(post_form(bare, "/ui/studies/new", {**FORM, "csrf_token": csrf.token_of("x")}),
            "sent no valid")
    assert count(engine, Study) == 0

    # Cancel and delete need it too; the study stays as it was.
    sid = client.post("/v1/studies", json=API).json()["id"]
    for path in (f"/ui/studies/{sid}/cancel", f"/ui/studies/{sid}/delete"):
        refused(post_form(client, path, {"csrf_token": theirs}), "does not match")
        refused(post_form(client, path, {}), "field is missing")
    assert client.get(f"/v1/studies/{sid}").json()["status"] == "queued"
    tid = client.post("/v1/range-tests", json={"dataset": "digits"}).json()["id"]
    for path in (f"/ui/range-tests/{tid}/cancel", f"/ui/range-tests/{tid}/delete",
                 "/ui/range-tests/new"):
        refused(post_form(client, path, {"dataset": "digits"}), "field is missing")
    assert client.get(f"/v1/range-tests/{tid}").json()["status"] == "queued"
    assert count(engine, RangeTest) == 1

    ok = post_form(client, "/ui/studies/new", {**FORM, "csrf_token": token})
    assert ok.status_code == 303 and count(engine, Study) == 2


def test_a_foreign_origin_is_refused_even_with_the_token(client: TestClient,
                                                          engine: Engine) -> None:
    token = form_token(client)
    data = {**FORM, "csrf_token": token}
    for headers in ({"Origin": "https://evil.example"},
                    {"Referer": "https://evil.example/page.html"}, {"Origin": "null"}):
        r = post_form(client, "/ui/studies/new", data, **headers)
        assert r.status_code == 403 and "Cross-site request refused" in r.json()["detail"]
    # Our own Origin passes the first layer; without the token the second refuses.
    refused(post_form(client, "/ui/studies/new", FORM, Origin="http://testserver"),
            "field is missing")
    assert count(engine, Study) == 0
    r = post_form(client, "/ui/studies/new", data, Origin="http://testserver")
    assert r.status_code == 303 and count(engine, Study) == 1


PLANTED = "A" * 43  # what a page on 127.0.0.1:9999 sets: document.cookie="lrsearch_csrf=..."


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_secret_planted_by_a_page_on_another_port_is_refused(client: TestClient,
                                                               engine: Engine) -> None:
    """Cookies are not kept apart by port: a page on another port of this host can plant its
    own double-submit secret (beside ours, or alone) and compute its token. Its Origin names
    that port, and the duplicate cookie shows: both refuse it, whatever the token."""
    planted = {**FORM, "csrf_token": csrf.token_of(PLANTED)}
    alone = post_form(client, "/ui/studies/new", planted, Origin="http://testserver:9999",
                      Cookie=f"lrsearch_csrf={PLANTED}")
    assert alone.status_code == 403 and "not of this server" in unescape(alone.text)
    no_origin = post_form(client, "/ui/studies/new", planted, Cookie=f"lrsearch_csrf={PLANTED}",
                          **{"Sec-Fetch-Site": "same-site"})
    assert no_origin.status_code == 403 and "same-site" in unescape(no_origin.text)
    client.get("/ui/studies/new")
    ours = client.cookies.get("lrsearch_csrf")
    assert ours
    client.cookies.clear()
    both = post_form(client, "/ui/studies/new", planted, Origin="http://testserver",
                     Cookie=f"lrsearch_csrf={ours}; lrsearch_csrf={PLANTED}")
    assert both.status_code == 403 and "more than once" in both.text
    assert count(engine, Study) == 0
    # The same form from this very origin, with our cookie alone, is accepted.
    accepted = post_form(client, "/ui/studies/new",
                         {**FORM, "csrf_token": csrf.token_of(ours)}, Origin="http://testserver",
                         Cookie=f"lrsearch_csrf={ours}", **{"Sec-Fetch-Site": "same-origin"})
    assert accepted.status_code == 303 and count(engine, Study) == 1


def test_once_logged_in_the_token_is_tied_to_the_session(client: TestClient,
                                                         engine: Engine) -> None:
    anonymous = form_token(client)  # while no key exists: the double-submit cookie
    key = make_key(engine, "team-a")
    r = client.post("/ui/login", data={"key": key}, follow_redirects=False)
    assert r.status_code == 303
    page = client.get("/ui/studies/new")
    assert "set-cookie" not in page.headers  # the session is the secret: no second cookie
    token = token_on(page.text)
    assert token == csrf.token_of(client.cookies["lrsearch_session"]) != anonymous
    refused(post_form(client, "/ui/studies/new", {**FORM, "csrf_token": anonymous}),
            "does not match")
    assert post_form(client, "/ui/studies/new",
                     {**FORM, "csrf_token": token}).status_code == 303
    # A new login is a new session: a page shown before it no longer submits.
    client.post("/ui/login", data={"key": key})
    refused(post_form(client, "/ui/studies/new", {**FORM, "csrf_token": token}),
            "does not match")
    # Another tenant's browser has its own token.
    other = TestClient(client.app)
    other.post("/ui/login", data={"key": make_key(engine, "team-b")})
    refused(post_form(client, "/ui/studies/new",
                      {**FORM, "csrf_token": form_token(other)}), "does not match")
    with Session(engine) as s:
        assert list(s.scalars(select(Study.tenant))) == ["team-a"]


# -- field errors ----------------------------------------------------------------------------


def api_detail(client: TestClient, path: str, body: dict[str, Any]) -> str:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    return str(r.json()["detail"])


# SQLite only: the form's messages are the API's, which tests/service/test_studies.py checks on
# both databases; that nothing is stored after a refused form is checked on both below.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("form", "body", "field"), [
    ({"epochs": "0"}, {"epochs": 0}, "epochs"),
    ({"n_trials": "abc"}, {"n_trials": "abc"}, "n_trials"),
    ({"n_trials": "500"}, {"n_trials": 500}, "n_trials"),  # over LRSEARCH_MAX_TRIALS
    ({"families": []}, {"families": None}, "families"),
    ({"families": ["nosuch"]}, {"families": ["nosuch"]}, "families"),
    ({"search_space.cosine": '{"nope": {"low": 1, "high": 2}}'},
     {"search_space": {"cosine": {"nope": {"low": 1, "high": 2}}}}, "search_space.cosine"),
    ({"search_space.cosine": '{"peak_lr": {"low": 2, "high": 1}}'},
     {"search_space": {"cosine": {"peak_lr": {"low": 2, "high": 1}}}}, "search_space.cosine"),
    ({"search_space.constant": '{"lr": {"value": 0.1}}'},
     {"search_space": {"constant": {"lr": {"value": 0.1}}}}, "search_space.constant"),
    ({"search_space.cosine": "[1, 2]"}, {"search_space": {"cosine": [1, 2]}},
     "search_space.cosine"),
    ({"dataset": "nosuch"}, {"dataset": "nosuch"}, "dataset"),
    ({"dataset": ""}, {"dataset": None}, "dataset"),
    ({"model": "nosuch"}, {"model": {"name": "nosuch"}}, "model"),
    ({"model": "upload:nope"}, {"model": {"upload": "nope"}}, "model"),
    ({"optimizer": "zz"}, {"optimizer": {"name": "zz"}}, "optimizer"),
    ({"objective.metric": "val_weird"}, {"objective": {"metric": "val_weird"}},
     "objective.direction"),
    ({"objective.direction": "maximize"}, {"objective": {"direction": "maximize"}},
     "objective.metric"),
    ({"range_test_id": "nosuch"}, {"range_test_id": "nosuch"}, "range_test_id"),
    ({"name": "x" * 201}, {"name": "x" * 201}, "name"),
])
def test_a_bad_field_shows_the_apis_message_next_to_it(
        client: TestClient, engine: Engine, form: dict[str, Any], body: dict[str, Any],
        field: str) -> None:
    expected = api_detail(client, "/v1/studies",
                          {k: v for k, v in {**API, **body}.items() if v is not None})
    r = post_form(client, "/ui/studies/new", {**FORM, **form, "csrf_token": form_token(client)})
    assert r.status_code == 422, r.text
    assert field_messages(r.text) == {field: [expected]}
    assert general_messages(r.text) == [] and "The study was not created." in r.text
    # What was typed is shown again, the field marked, and nothing was stored.
    for name, value in form.items():
        if isinstance(value, str) and name.startswith("search_space."):
            assert f">{escape(value)}</textarea>" in r.text
        elif isinstance(value, str) and name not in ("optimizer", "objective.direction"):
            assert re.search(f'name="{re.escape(name)}"[^>]* value="{re.escape(escape(value))}"',
                             r.text), name
    assert f'aria-invalid="true" aria-describedby="error-{field}"' in r.text
    assert count(engine, Study) == 0


def test_text_that_is_not_json_is_named_with_what_was_typed(client: TestClient,
                                                            engine: Engine) -> None:
    r = post_form(client, "/ui/studies/new", {**FORM, "csrf_token": form_token(client),
                                              "search_space.cosine": "{peak_lr: 0.1}"})
    assert r.status_code == 422
    [message] = field_messages(r.text)["search_space.cosine"]
    assert message.startswith("search_space.cosine: not valid JSON (Expecting property name")
    assert message.endswith("Received: '{peak_lr: 0.1}'")
    assert count(engine, Study) == 0


def test_an_error_naming_no_field_goes_to_the_box_at_the_top(client: TestClient,
                                                              engine: Engine) -> None:
    token = form_token(client)
    data = {**FORM, "csrf_token": token, "idempotency_key": "k1"}
    first = post_form(client, "/ui/studies/new", data)
    # A double submit (the same form sent twice) makes one study.
    assert post_form(client, "/ui/studies/new", data).headers["location"] == \
        first.headers["location"]
    assert count(engine, Study) == 1
    # The same key with another body: the API's 409, which names no field of the form.
    r = post_form(client, "/ui/studies/new", {**data, "epochs": "4"})
    assert r.status_code == 409
    assert general_messages(r.text) == [
        "This Idempotency-Key was used with a different request body."]
    assert field_messages(r.text) == {}
    long_key = post_form(client, "/ui/studies/new", {**data, "idempotency_key": "k" * 201})
    assert long_key.status_code == 422 and general_messages(long_key.text) == [
        "idempotency_key must be at most 200 characters. Received: 201 characters"]
    assert count(engine, Study) == 1


def test_the_range_test_form_shows_the_apis_messages(client: TestClient,
                                                     engine: Engine) -> None:
    body = {"dataset": "digits", "model": {"name": "mlp"}, "optimizer": {"name": "sgd"},
            "min_lr": -1, "num_iter": 3, "validation": False}
    expected = api_detail(client, "/v1/range-tests", body)
    token = form_token(client, "/ui/range-tests/new")
    r = post_form(client, "/ui/range-tests/new",
                  {"dataset": "digits", "model": "mlp", "optimizer": "sgd", "min_lr": "-1",
                   "num_iter": "3", "csrf_token": token})
    assert r.status_code == 422
    shown = field_messages(r.text)
    # The API words both in one detail; the form puts each next to its field.
    assert expected == f"{shown['min_lr'][0]}; {shown['num_iter'][0]}"
    assert set(shown) == {"min_lr", "num_iter"} and "The range test was not created." in r.text
    assert re.search('name="min_lr" value="-1"', r.text)
    unknown = post_form(client, "/ui/range-tests/new",
                        {"dataset": "nosuch", "csrf_token": token})
    assert field_messages(unknown.text) == {"dataset": [api_detail(
        client, "/v1/range-tests", {"dataset": "nosuch"})]}
    assert count(engine, RangeTest) == 0


# -- what a good form does -------------------------------------------------------------------


def test_a_good_form_creates_the_study_the_api_would(client: TestClient,
                                                     engine: Engine) -> None:
    tid = client.post("/v1/range-tests", json={"dataset": "digits"}).json()["id"]
    # The link on a finished range test's page fills the form in.
    assert f'name="range_test_id" list="range-tests" value="{tid}"' in client.get(
        f"/ui/studies/new?range_test_id={tid}").text
    token = form_token(client)
    data = {**FORM, "csrf_token": token, "name": "from-the-form", "range_test_id": tid,
            "families": ["cosine", "one_cycle"], "baseline": "on",
            "objective.metric": "val_loss", "objective.direction": "minimize",
            "search_space.cosine": '{"alpha": {"value": 0.1}}'}
    # A range test that has not succeeded: the API's refusal, next to the field.
    pending = post_form(client, "/ui/studies/new", data)
    assert field_messages(pending.text)["range_test_id"][0].startswith(
        f"Range test `{tid}` has not succeeded")
    bounds = {"cosine": {"peak_lr": {"low": 0.05, "high": 0.5, "log": True}}}
    with Session(engine) as s, s.begin():
        test = s.get(RangeTest, tid)
        assert test is not None
        test.status, test.result = "succeeded", {"sweeps": [], "suggestions": {},
                                                 "family_bounds": bounds}
    assert f'<option value="{tid}">' in client.get("/ui/studies/new").text
    r = post_form(client, "/ui/studies/new", data)
    assert r.status_code == 303, r.text
    sid = r.headers["location"].removeprefix("/ui/studies/")
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["name"] == "from-the-form" and study["families"] == ["cosine", "one_cycle"]
    assert study["request"] == {
        "name": "from-the-form", "families": ["cosine", "one_cycle"], "dataset": "digits",
        "model": {"name": "mlp"}, "optimizer": {"name": "sgd"}, "epochs": 3,
        "batch_size": 32, "n_trials": 2,
        "objective": {"metric": "val_loss", "direction": "minimize"},
        "search_space": {"cosine": {"alpha": {"value": 0.1}}}, "range_test_id": tid}
    with Session(engine) as s:
        row = s.get(Study, sid)
        assert row is not None
        # The range test's bounds under the user's override, as the API resolves them.
        assert row.spec["search_space"]["cosine"] == {
            "peak_lr": {"low": 0.05, "high": 0.5, "log": True}, "alpha": {"value": 0.1}}
        assert row.spec["baseline"] is not None  # the box was ticked: the API's default
    unticked = post_form(client, "/ui/studies/new", {**FORM, "csrf_token": token})
    sid2 = unticked.headers["location"].removeprefix("/ui/studies/")
    assert client.get(f"/v1/studies/{sid2}").json()["request"]["baseline"] == {
        "enabled": False}


def test_cancel_and_delete_buttons_do_what_the_api_does(client: TestClient,
                                                        engine: Engine) -> None:
    sid = client.post("/v1/studies", json=API).json()["id"]
    page = client.get(f"/ui/studies/{sid}").text
    assert f'action="/ui/studies/{sid}/cancel"' in page and 'id="delete"' not in page
    token = token_on(page)
    # Not finished: the confirmation page says to cancel first, and the API's 409 stands.
    confirm = client.get(f"/ui/studies/{sid}/delete").text
    assert "cancel it before deleting it" in confirm and "confirm-delete" not in confirm
    busy = post_form(client, f"/ui/studies/{sid}/delete", {"csrf_token": token})
    assert busy.status_code == 409 and "cancel it before deleting" in busy.text
    done = post_form(client, f"/ui/studies/{sid}/cancel", {"csrf_token": token})
    assert done.status_code == 303 and done.headers["location"] == f"/ui/studies/{sid}"
    assert client.get(f"/v1/studies/{sid}").json()["status"] == "cancelled"
    page = client.get(f"/ui/studies/{sid}").text
    assert 'id="cancel"' not in page and f'href="/ui/studies/{sid}/delete"' in page
    again = post_form(client, f"/ui/studies/{sid}/cancel", {"csrf_token": token})
    assert again.status_code == 409 and f"Study `{sid}` is already cancelled." in again.text
    confirm = client.get(f"/ui/studies/{sid}/delete").text
    assert f'action="/ui/studies/{sid}/delete"' in confirm and "cannot be undone" in confirm
    gone = post_form(client, f"/ui/studies/{sid}/delete", {"csrf_token": token})
    assert gone.status_code == 303 and gone.headers["location"] == "/ui"
    assert client.get(f"/v1/studies/{sid}").status_code == 404 and count(engine, Study) == 0
    missing = post_form(client, f"/ui/studies/{sid}/delete", {"csrf_token": token})
    assert missing.status_code == 404 and f"Unknown study `{sid}`" in missing.text

    tid = client.post("/v1/range-tests", json={"dataset": "digits"}).json()["id"]
    assert f'action="/ui/range-tests/{tid}/cancel"' in client.get(f"/ui/range-tests/{tid}").text
    assert post_form(client, f"/ui/range-tests/{tid}/cancel",
                     {"csrf_token": token}).headers["location"] == f"/ui/range-tests/{tid}"
    assert client.get(f"/v1/range-tests/{tid}").json()["status"] == "cancelled"
    assert f'href="/ui/range-tests/{tid}/delete"' in client.get(f"/ui/range-tests/{tid}").text
    assert post_form(client, f"/ui/range-tests/{tid}/delete",
                     {"csrf_token": token}).headers["location"] == "/ui"
    assert count(engine, RangeTest) == 0


def test_the_index_links_to_the_forms(client: TestClient) -> None:
    page = client.get("/ui").text
    assert 'href="/ui/studies/new"' in page and 'href="/ui/range-tests/new"' in page
    form = client.get("/ui/studies/new").text
    # Every family with its default search space next to its field.
    assert 'name="search_space.piecewise"' in form and 'id="default-cosine"' in form
    assert "peak_lr: 0.0001 to 1, log<br>alpha: 0 to 0.2<br>warmup_epochs: 0 to 0.2 × epochs" \
        in form
