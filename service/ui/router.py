"""The web page at /ui: studies with their progress, a study page (summary, best schedule,
plots, trials) and a range-test page. Server-rendered (Jinja2), no JavaScript, no build step;
pages of running work refresh themselves every few seconds.

Who is asking: the same rule as the API (a Bearer key, or the local tenant while no key exists
on a loopback server), plus an HttpOnly session cookie holding the key, set by /ui/login.
Every page is read-only: changing anything goes through the API with a key.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

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
from service.studies.schemas import StudyOut, TrialOut
from service.workers import ops as workers

COOKIE = "lrsearch_key"
REFRESH_SECONDS = 5
TRIALS_SHOWN = 500

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


class LoginRequired(Exception):
    def __init__(self, next_path: str, reason: str) -> None:
        self.next_path, self.reason = next_path, reason


def ui_tenant(request: Request, session: SessionDep) -> str:
    try:
        return resolve_tenant(request, session, request.cookies.get(COOKIE))
    except Unauthorized as e:
        raise LoginRequired(request.url.path, e.detail) from None


Tenant = Annotated[str, Depends(ui_tenant)]


def _page(request: Request, name: str, status_code: int = 200, **context: Any
          ) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"refresh": None, **context},
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
                 range_tests=[RangeTestOut.of(t) for t in tests], n_tests=n_tests,
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
    return _page(request, "study.html", tenant=tenant, study=out, spec=study.spec,
                 best=best, trials=[TrialOut.of(t) for t in trials], n_trials=n_trials,
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


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, key: Annotated[str, Form(max_length=200)], session: SessionDep,
          next: Annotated[str, Form(max_length=2000)] = "/ui") -> Response:
    if auth.authenticate(session, key.strip()) is None:
        return _page(request, "login.html", status_code=401, next=_safe_next(next),
                     error="Invalid or revoked API key.")
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, key.strip(), httponly=True, samesite="strict", path="/ui",
                        secure=request.url.scheme == "https", max_age=7 * 24 * 3600)
    return response


@router.get("/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
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
