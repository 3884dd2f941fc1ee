"""One exception hierarchy and one response shape: {"type": ..., "detail": ...}.

The same condition always gives the same status: 404 unknown id, 409 state conflict,
413 body too large, 422 invalid input (library errors included; `field` names the culprit).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from lrsearch import datasets
from lrsearch.errors import LRSearchError, redact_paths


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


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the one shape."""

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(body(exc.type, exc.detail, field=exc.field), status_code=exc.status,
                            headers=headers)

    @app.exception_handler(LRSearchError)
    async def library_error(request: Request, exc: LRSearchError) -> JSONResponse:
        # Library messages may name files (a missing dataset's folders); tenants never see
        # the server's paths.
        settings = request.app.state.settings
        labels = datasets.path_labels(settings.data_dir, settings.data_roots)
        return JSONResponse(body("invalid", redact_paths(str(exc), labels), field=exc.field),
                            status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                  for e in exc.errors()]
        detail = "; ".join(f"{_loc(e['loc']) or 'body'}: {e['msg']}{_received(raw)}"
                           for e, raw in zip(errors, exc.errors(), strict=True))
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
