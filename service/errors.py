"""One exception hierarchy and one response shape: {"type": ..., "detail": ...}.

The same condition always gives the same status: 404 unknown id, 409 state conflict,
413 body too large, 422 invalid input (library errors included; `field` names the culprit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from lrsearch import datasets
from lrsearch.errors import LRSearchError, redact_paths

if TYPE_CHECKING:
    from service.config import Settings


def _received(error: dict[str, Any]) -> str:
    """" (received <value>)" for a short scalar input that failed validation, so the message
    names the value as well as the field; nothing for containers, long text or a missing
    field (at most 60 characters are echoed, never a whole body)."""
    value = error.get("input")
    if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 60):
        return f" (received {value!r})"
    return ""


class APIError(Exception):
    status = 500
    type = "error"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class Unauthorized(APIError):
    status, type = 401, "unauthorized"


class TooMany(APIError):
    status, type = 429, "too_many"


class NotFound(APIError):
    status, type = 404, "not_found"


class Conflict(APIError):
    status, type = 409, "conflict"


class Invalid(APIError):
    status, type = 422, "invalid"


class TooLarge(APIError):
    status, type = 413, "too_large"


def body(type_: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "detail": detail, **{k: v for k, v in extra.items() if v is not None}}


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "body")


def describe(error: Mapping[str, Any]) -> str:
    """One pydantic error as a 422's detail words it: `<field>: <message> (received <value>)`
    (the web page's forms show the same sentence next to the field)."""
    return f"{_loc(tuple(error['loc'])) or 'body'}: {error['msg']}{_received(dict(error))}"


def library_detail(settings: Settings, exc: LRSearchError) -> str:
    """A library error's message as a 422 gives it: without the server's paths (a missing
    dataset's folders), which tenants never see."""
    labels = datasets.path_labels(settings.data_dir, settings.data_roots)
    return redact_paths(str(exc), labels)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the one shape."""

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(body(exc.type, exc.detail, field=exc.field), status_code=exc.status,
                            headers=headers)

    @app.exception_handler(LRSearchError)
    async def library_error(request: Request, exc: LRSearchError) -> JSONResponse:
        return JSONResponse(body("invalid", library_detail(request.app.state.settings, exc),
                                 field=exc.field), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                  for e in exc.errors()]
        detail = "; ".join(describe(raw) for raw in exc.errors())
        return JSONResponse(body("validation_error", detail, errors=errors), status_code=422)

    @app.exception_handler(SQLAlchemyTimeout)
    async def pool_exhausted(_: Request, exc: SQLAlchemyTimeout) -> JSONResponse:
        return JSONResponse(body("unavailable", "The database is busy: no connection was free "
                                 "in time. Retry shortly."), status_code=503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                413: "too_large"}.get(
            exc.status_code, "http_error")
        return JSONResponse(body(kind, str(exc.detail)), status_code=exc.status_code)
