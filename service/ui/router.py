"""The web page at /ui: studies with their progress, a study page (summary, best schedule,
plots, trials) and a range-test page. Server-rendered (Jinja2), no JavaScript, no build step;
pages of running work refresh themselves every few seconds.

Who is asking: the same rule as the API (a Bearer key, or the local tenant while no key was
ever created on a loopback server), plus the login: POST /ui/login checks a key and sets an
HttpOnly, SameSite=Strict cookie holding a server-side session's random token (never the key;
Secure over https), and POST /ui/logout deletes that session. Every page is read-only:
changing anything goes through the API with a key. Cross-site POSTs (a login forced by another
site) are refused before they get here (service/origin.py).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from lrsearch.history import metric_columns, metrics_of
from lrsearch.spec import RunSpec
from service.auth import ops as auth
from service.config import Settings
from service.deps import SessionDep, get_settings, resolve_tenant
from service.errors import APIError, Unauthorized
from service.range_tests import ops as range_tests
from service.range_tests.plots import render as render_range_test
from service.range_tests.schemas import RangeTestOut
from service.studies import ops as studies
from service.studies import plots as study_plots
from service.studies.models import FINISHED
from service.studies.progress import objective_of
from service.studies.schemas import StudyOut, TrialOut
from service.workers import ops as workers

COOKIE = "lrsearch_session"
REFRESH_SECONDS = 5
TRIALS_SHOWN = 500

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


class LoginRequired(Exception):
    def __init__(self, next_path: str, reason: str) -> None:
        self.next_path, self.reason = next_path, reason


def ui_tenant(request: Request, session: SessionDep) -> str:
    token = request.cookies.get(COOKIE)
    try:
        tenant = resolve_tenant(request, session, token)
    except Unauthorized as e:
        raise LoginRequired(request.url.path, e.detail) from None
    # The page offers "log out" only to a browser that logged in.
    request.state.logged_in = bool(token) and "authorization" not in request.headers
    return tenant


Tenant = Annotated[str, Depends(ui_tenant)]


def _page(request: Request, name: str, status_code: int = 200, **context: Any
          ) -> HTMLResponse:
    logged_in = getattr(request.state, "logged_in", False)
    return templates.TemplateResponse(request, name,
                                      {"refresh": None, "logged_in": logged_in, **context},
                                      status_code=status_code,
                                      headers={"Cache-Control": "no-store"})


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("", response_class=HTMLResponse)
def index(request: Request, session: SessionDep, tenant: Tenant) -> HTMLResponse:
    rows, total = studies.list_studies(session, tenant, None, 0, 50)
    tests, n_tests = range_tests.list_tests(session, tenant, 0, 20)
    settings: Settings = get_settings(request)
    active = any(s.status not in FINISHED for s in rows) or any(
        t.status in ("queued", "running") for t in tests)
    return _page(request, "index.html", tenant=tenant,
                 studies=[StudyOut.of(s) for s in rows], total=total,
                 range_tests=tests, n_tests=n_tests,
                 workers_alive=workers.alive(session, settings.lease_seconds),
                 refresh=REFRESH_SECONDS if active else None)


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(study_id: str, request: Request, session: SessionDep, tenant: Tenant
               ) -> HTMLResponse:
    study = studies.get(session, tenant, study_id)
    trials, n_trials = studies.list_trials(session, study, 0, TRIALS_SHOWN)
    best = studies.best(session, study) if study.best_trial_number is not None else None
    out = StudyOut.of(study)
    kinds = ["lr_curves", "history"] + (["leaderboard"] if len(study.spec["families"]) > 1
                                        else [])
    metric, direction = objective_of(study.spec)
    history = [{**p, "metrics": metrics_of(p)} for p in (best or {}).get("history") or []]
    return _page(request, "study.html", tenant=tenant, study=out, spec=study.spec,
                 run=RunSpec.from_stored(study.spec),
                 metric=metric, direction=direction, best=best, history=history,
                 history_columns=metric_columns(history),
                 trials=[TrialOut.of(t) for t in trials], n_trials=n_trials,
                 plot_kinds=kinds,
                 refresh=None if study.status in FINISHED else REFRESH_SECONDS)


@router.get("/studies/{study_id}/plots/{kind}.png")
def study_plot(study_id: str, kind: study_plots.PlotKind, session: SessionDep,
               tenant: Tenant) -> Response:
    return _png(study_plots.render(session, studies.get(session, tenant, study_id), kind))


@router.get("/range-tests/{test_id}", response_class=HTMLResponse)
def range_test_page(test_id: str, request: Request, session: SessionDep, tenant: Tenant
                    ) -> HTMLResponse:
    test = RangeTestOut.of(range_tests.get(session, tenant, test_id))
    return _page(request, "range_test.html", tenant=tenant, test=test,
                 refresh=REFRESH_SECONDS if test.status in ("queued", "running") else None)


@router.get("/range-tests/{test_id}/plot.png")
def range_test_plot(test_id: str, session: SessionDep, tenant: Tenant) -> Response:
    return _png(render_range_test(range_tests.get(session, tenant, test_id)))


def _safe_next(path: str | None) -> str:
    """Only our own pages: never an absolute or scheme-relative URL (an open redirect)."""
    if path and path.startswith("/ui") and not path.startswith("//"):
        return path
    return "/ui"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/ui") -> HTMLResponse:
    return _page(request, "login.html", next=_safe_next(next), error=None)


def _https(request: Request) -> bool:
    """The browser reached us over https: directly, or through a TLS-terminating proxy whose
    X-Forwarded-Proto we were told to trust (LRSEARCH_TRUST_FORWARDED_HEADERS)."""
    if request.url.scheme == "https":
        return True
    settings: Settings = get_settings(request)
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return settings.trust_forwarded_headers and forwarded == "https"


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, key: Annotated[str, Form(max_length=200)], session: SessionDep,
          next: Annotated[str, Form(max_length=2000)] = "/ui") -> Response:
    row = auth.authenticate_key(session, key.strip())
    if row is None:
        return _page(request, "login.html", status_code=401, next=_safe_next(next),
                     error="Invalid or revoked API key.")
    settings: Settings = get_settings(request)
    if previous := request.cookies.get(COOKIE):
        auth.close_web_session(session, previous)
    token = auth.open_web_session(session, row, settings.web_session_seconds)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/ui",
                        secure=_https(request), max_age=settings.web_session_seconds)
    return response


@router.get("/logout", response_class=HTMLResponse)
def logout_page(request: Request) -> HTMLResponse:
    """Logging out changes state, so it is a POST; a GET (an old link, a prefetch) only shows
    the button."""
    return _page(request, "logout.html")


@router.post("/logout")
def logout(request: Request, session: SessionDep) -> Response:
    if token := request.cookies.get(COOKIE):
        auth.close_web_session(session, token)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict",
                           secure=_https(request))
    return response


def install(app: FastAPI) -> None:
    """Mount the pages; a missing key sends the browser to the login form, and API errors
    (an unknown id, a plot that does not exist yet) become a readable page."""
    app.include_router(router)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/ui/login?next={quote(exc.next_path)}", status_code=303)

    previous = app.exception_handlers[APIError]

    async def api_error(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith("/ui") or request.url.path.endswith(".png"):
            response = previous(request, exc)
            return await response if inspect.isawaitable(response) else response
        assert isinstance(exc, APIError)
        return _page(request, "error.html", status_code=exc.status, error=exc.detail)

    app.add_exception_handler(APIError, api_error)
