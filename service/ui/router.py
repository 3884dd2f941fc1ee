"""The web page at /ui: studies with their progress, a study page (summary, best schedule,
plots, trials) and a range-test page. Server-rendered (Jinja2), no JavaScript, no build step;
pages of running work refresh themselves every few seconds.

Who is asking: the same rule as the API (a Bearer key, or the local tenant while no key was
ever created on a loopback server), plus the login: POST /ui/login checks a key and sets an
HttpOnly, SameSite=Strict cookie holding a server-side session's random token (never the key;
Secure over https), and POST /ui/logout deletes that session.

Acting: the forms "New study" and "New range test" build the API's own request body
(StudyCreate, RangeTestCreate) and call the API's own endpoint functions, so the validation and
the use case are exactly those of POST /v1/studies and /v1/range-tests; an invalid form comes
back with what was typed and the API's message next to the field it names, and nothing is
stored. Cancel and Delete (after a confirmation page) call the API's cancel and delete
endpoints. Every form that changes something carries a CSRF token (service/ui/csrf.py), the
second layer behind service/origin.py, which refuses POSTs whose Origin or Referer names
another site before they get here.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from lrsearch import optimizers, schedules
from lrsearch.durations import duration_text
from lrsearch.errors import LRSearchError
from lrsearch.history import metric_columns, metrics_of
from lrsearch.spec import RunSpec
from service import errors
from service.auth import ops as auth
from service.config import Settings
from service.datasets import ops as datasets
from service.deps import SessionDep, SettingsDep, get_settings, resolve_tenant
from service.errors import APIError, Unauthorized
from service.models import ops as models
from service.range_tests import ops as range_tests
from service.range_tests import router as range_tests_api
from service.range_tests.plots import render as render_range_test
from service.range_tests.schemas import RangeTestCreate, RangeTestOut
from service.studies import importance as study_importance
from service.studies import ops as studies
from service.studies import plots as study_plots
from service.studies import router as studies_api
from service.studies.models import FINISHED
from service.studies.progress import objective_of
from service.studies.schemas import StudyCreate, StudyOut, TrialOut
from service.ui import csrf, forms
from service.workers import ops as workers

COOKIE = csrf.SESSION_COOKIE  # the login cookie
REFRESH_SECONDS = 5
TRIALS_SHOWN = 500

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
# Which buttons a page offers: the states in which the API's cancel and delete succeed.
templates.env.globals.update(study_finished=FINISHED, range_test_finished=range_tests.FINISHED)
templates.env.filters["duration"] = duration_text  # the command line's rule


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
    """Render a page. Its forms call `csrf_token()`; a page that did so for a browser without
    a secret yet also sets the double-submit cookie (the template is rendered right here)."""
    logged_in = getattr(request.state, "logged_in", False)
    response = templates.TemplateResponse(
        request, name, {"refresh": None, "logged_in": logged_in,
                        "csrf_token": lambda: csrf.page_token(request), **context},
        status_code=status_code, headers={
            "Cache-Control": "no-store",
            # Pages with buttons that act are never shown inside another site's frame, where
            # a visitor could be tricked into clicking them.
            "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"})
    csrf.set_cookie(request, response, secure=_https(request))
    return response


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF token is right (CsrfRefused, a 403 page, otherwise)."""
    form = await request.form()
    csrf.check(request, form, https=_https(request))
    return form


# Declared before the tenant in every handler, so the token is checked first.
CheckedForm = Annotated[FormData, Depends(checked_form)]


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


IDEMPOTENCY_FIELD = "idempotency_key"  # one per rendered form: a double submit makes one


def _idempotency_key(form: FormData, found: forms.FormErrors) -> str | None:
    key = forms.text(form, IDEMPOTENCY_FIELD)
    if len(key) > 200:  # the API's Idempotency-Key header allows as much
        found.general.append(f"{IDEMPOTENCY_FIELD} must be at most 200 characters. "
                             f"Received: {len(key)} characters")
    return key or None


def _dataset_names(session: Session, settings: Settings, tenant: str) -> list[str]:
    return [d["name"] for d in datasets.list_all(session, settings, tenant)]


def _model_names(session: Session, settings: Settings, tenant: str) -> list[str]:
    """Builders by name; uploaded models as `upload:<name>` (forms.model_of reads it back)."""
    return [forms.UPLOAD_PREFIX + m["name"] if m.get("source") == "upload" else m["name"]
            for m in models.catalog(session, settings, tenant)]


def _training_form(request: Request, session: Session, settings: Settings, tenant: str,
                   name: str, values: dict[str, Any], found: forms.FormErrors,
                   status_code: int, **context: Any) -> HTMLResponse:
    """A form that submits training (a study, a range test): the tenant's datasets and models,
    the optimizers, and a fresh idempotency key, beside the form's own `context`."""
    return _page(request, name, status_code=status_code, tenant=tenant, values=values,
                 errors=found, datasets=_dataset_names(session, settings, tenant),
                 models=_model_names(session, settings, tenant),
                 optimizers=optimizers.names(), idempotency_key=secrets.token_urlsafe(16),
                 **context)


def _submit(session: Session, settings: Settings, known: Sequence[str],
            found: forms.FormErrors, create: Callable[[], Any]) -> tuple[str | None, int]:
    """Run `create` (the API's body validation and endpoint function) unless the form already
    has errors: (the new id, 201), or (None, the error's status) with the API's messages filed
    in `found` by field and everything the request wrote rolled back."""
    if found:
        return None, 422
    status = 422
    try:
        return str(create().id), 201
    except ValidationError as e:
        found.extend(forms.validation_errors(known, e))
    except APIError as e:
        found.add(known, e.field, e.detail)
        status = e.status
    except LRSearchError as e:
        found.add(known, e.field, errors.library_detail(settings, e))
    session.rollback()  # nothing of a refused request is kept
    return None, status


def _study_form(request: Request, session: Session, settings: Settings, tenant: str,
                values: dict[str, Any], found: forms.FormErrors, status_code: int = 200
                ) -> HTMLResponse:
    tests, _ = range_tests.list_tests(session, tenant, 0, 50)
    return _training_form(request, session, settings, tenant, "new_study.html", values, found,
                          status_code, families=forms.catalog(),
                          range_tests=[t for t in tests if t.status == "succeeded"])


@router.get("/studies/new", response_class=HTMLResponse)
def new_study_page(request: Request, session: SessionDep, settings: SettingsDep,
                   tenant: Tenant, range_test_id: str = "") -> HTMLResponse:
    """The empty form (`?range_test_id=` fills in the range test whose bounds to use)."""
    return _study_form(request, session, settings, tenant,
                       forms.study_defaults(range_test_id[:32]), forms.FormErrors())


@router.post("/studies/new", response_class=HTMLResponse)
def new_study(request: Request, form: CheckedForm, session: SessionDep,
              settings: SettingsDep, tenant: Tenant) -> Response:
    """Submit the form as POST /v1/studies would the same body: 303 to the new study, or
    the form again with the API's messages (and nothing stored)."""
    families = schedules.names()
    body, found = forms.study_body(form, families)
    key = _idempotency_key(form, found)
    created, status = _submit(session, settings, forms.study_fields(families), found,
                              lambda: studies_api.create_study(
                                  body=StudyCreate.model_validate(body), session=session,
                                  settings=settings, tenant=tenant, idempotency_key=key))
    if created is not None:
        return RedirectResponse(f"/ui/studies/{created}", status_code=303)
    return _study_form(request, session, settings, tenant, forms.study_values(form), found,
                       status_code=status)


def _range_test_form(request: Request, session: Session, settings: Settings, tenant: str,
                     values: dict[str, Any], found: forms.FormErrors, status_code: int = 200
                     ) -> HTMLResponse:
    return _training_form(request, session, settings, tenant, "new_range_test.html", values,
                          found, status_code)


@router.get("/range-tests/new", response_class=HTMLResponse)
def new_range_test_page(request: Request, session: SessionDep, settings: SettingsDep,
                        tenant: Tenant) -> HTMLResponse:
    return _range_test_form(request, session, settings, tenant, forms.range_test_defaults(),
                            forms.FormErrors())


@router.post("/range-tests/new", response_class=HTMLResponse)
def new_range_test(request: Request, form: CheckedForm, session: SessionDep,
                   settings: SettingsDep, tenant: Tenant) -> Response:
    """Submit the form as POST /v1/range-tests would the same body."""
    found = forms.FormErrors()
    key = _idempotency_key(form, found)
    created, status = _submit(session, settings, forms.RANGE_TEST_FIELDS, found,
                              lambda: range_tests_api.create_range_test(
                                  body=RangeTestCreate.model_validate(
                                      forms.range_test_body(form)),
                                  session=session, settings=settings, tenant=tenant,
                                  idempotency_key=key))
    if created is not None:
        return RedirectResponse(f"/ui/range-tests/{created}", status_code=303)
    return _range_test_form(request, session, settings, tenant, forms.range_test_values(form),
                            found, status_code=status)


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
                 importance=study_importance.of(session, study).as_dict(),
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


# Cancel and delete: the API's own endpoint functions, so the rules (409 when finished, or
# when not finished yet) and the clean-up (the deleted study's Optuna studies, after the
# commit) are theirs. An APIError becomes the readable error page (install below).


@router.post("/studies/{study_id}/cancel")
def cancel_study(study_id: str, form: CheckedForm, session: SessionDep, tenant: Tenant
                 ) -> Response:
    study = studies_api.cancel_study(study_id=study_id, session=session, tenant=tenant)
    return RedirectResponse(f"/ui/studies/{study.id}", status_code=303)


@router.get("/studies/{study_id}/delete", response_class=HTMLResponse)
def delete_study_page(study_id: str, request: Request, session: SessionDep, tenant: Tenant
                      ) -> HTMLResponse:
    """The confirmation (a page, so no script is needed): deleting cannot be undone."""
    study = StudyOut.of(studies.get(session, tenant, study_id))
    return _page(request, "confirm_delete.html", tenant=tenant, kind="study",
                 label=study.name or study.id, id=study.id, status=study.status,
                 finished=study.status in FINISHED, back=f"/ui/studies/{study.id}",
                 action=f"/ui/studies/{study.id}/delete",
                 what=f"its {study.n_slots} trial slots, their curves and its Optuna studies")


@router.post("/studies/{study_id}/delete")
def delete_study(study_id: str, form: CheckedForm, session: SessionDep, settings: SettingsDep,
                 tenant: Tenant, background: BackgroundTasks) -> Response:
    studies_api.delete_study(study_id=study_id, session=session, settings=settings,
                             tenant=tenant, background=background)
    return RedirectResponse("/ui", status_code=303)  # the background task runs after it


@router.post("/range-tests/{test_id}/cancel")
def cancel_range_test(test_id: str, form: CheckedForm, session: SessionDep, tenant: Tenant
                      ) -> Response:
    test = range_tests_api.cancel_range_test(test_id=test_id, session=session, tenant=tenant)
    return RedirectResponse(f"/ui/range-tests/{test.id}", status_code=303)


@router.get("/range-tests/{test_id}/delete", response_class=HTMLResponse)
def delete_range_test_page(test_id: str, request: Request, session: SessionDep,
                           tenant: Tenant) -> HTMLResponse:
    test = range_tests.get(session, tenant, test_id)
    return _page(request, "confirm_delete.html", tenant=tenant, kind="range test",
                 label=test.id, id=test.id, status=test.status,
                 finished=test.status in range_tests.FINISHED,
                 back=f"/ui/range-tests/{test.id}", action=f"/ui/range-tests/{test.id}/delete",
                 what="its curves, suggestions and bounds (studies that used its bounds keep "
                      "them)")


@router.post("/range-tests/{test_id}/delete")
def delete_range_test(test_id: str, form: CheckedForm, session: SessionDep, tenant: Tenant
                      ) -> Response:
    range_tests_api.delete_range_test(test_id=test_id, session=session, tenant=tenant)
    return RedirectResponse("/ui", status_code=303)


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

    @app.exception_handler(csrf.CsrfRefused)
    async def csrf_refused(request: Request, exc: csrf.CsrfRefused) -> Response:
        return _page(request, "error.html", status_code=403, heading="Form refused",
                     error=exc.detail)

    previous = app.exception_handlers[APIError]

    async def api_error(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith("/ui") or request.url.path.endswith(".png"):
            response = previous(request, exc)
            return await response if inspect.isawaitable(response) else response
        assert isinstance(exc, APIError)
        return _page(request, "error.html", status_code=exc.status, error=exc.detail)

    app.add_exception_handler(APIError, api_error)
