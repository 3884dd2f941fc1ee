"""The FastAPI application. `create_app(settings)` builds it; the engine is made in the lifespan,
never at import time. This process never imports TensorFlow."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors, metrics, migrations
from service.auth.cache import KeyCache
from service.catalog.router import router as catalog_router
from service.config import Settings
from service.datasets.router import roots_router
from service.datasets.router import router as datasets_router
from service.db import make_engine, session_factory
from service.models.router import router as models_router
from service.notifications.router import router as notifications_router
from service.origin import RequestOrigin
from service.range_tests.router import router as range_tests_router
from service.studies.router import router as studies_router
from service.ui import router as ui

log = logging.getLogger("lrsearch.api")


class BodyLimit:
    """413 for bodies over the limit, by Content-Length or while streaming; uploads to
    /v1/datasets and /v1/models get the (larger) upload limit."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Only a multipart upload gets the upload limit: a JSON body to the same path (a
        # dataset reference) is held whole while parsed, so it gets the ordinary one.
        headers = dict(scope.get("headers", []))  # built once: this runs for every request
        ctype = headers.get(b"content-type", b"")
        upload = scope["path"].rstrip("/") in ("/v1/datasets", "/v1/models") \
            and ctype.lower().startswith(b"multipart/form-data")
        limit = self.settings.max_upload_bytes + 65_536 if upload else self.settings.max_body_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reject(send, limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge(limit)
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send, limit)

    @staticmethod
    async def _reject(send: Send, limit: int) -> None:
        response = JSONResponse(errors.body("too_large", f"The request body is larger than "
                                            f"{limit} bytes."), status_code=413)
        await response({"type": "http"}, _no_receive, send)


class DatabaseSlots:
    """At most `slots` requests inside the app at once: the size of the connection pool.

    A request holds its database connection across several thread-pool hops (the session
    dependency, the tenant check, the handler, the commit). Without this limit, under load
    every pool thread could be blocked waiting for a connection while the requests holding the
    connections wait for a thread to finish: a deadlock that ended in the pool's timeout after
    30 s (B4, 64 concurrent pollers). Waiting here costs an event-loop task, not a thread."""

    def __init__(self, app: ASGIApp, slots: int) -> None:
        self.app, self.slots = app, slots
        self._semaphore: asyncio.Semaphore | None = None  # made in the server's event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.slots)
        async with self._semaphore:
            await self.app(scope, receive, send)


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(settings: Settings | None = None, *, anonymous: bool = True) -> FastAPI:
    """The app. `anonymous`: accept requests without a key as the local tenant while no API
    key exists (the CLI allows it on loopback addresses, or with --insecure)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size,
                             max_overflow=settings.db_max_overflow,
                             application_name="lrsearch-api")
        # As many threads as connections (and DatabaseSlots lets in as many requests).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.db_pool_size
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        collector = metrics.DatabaseCollector(app.state.sessions, settings)
        registry.register(collector)
        yield
        registry.unregister(collector)
        engine.dispose()

    app = FastAPI(title="lrsearch", version="0.1.0", lifespan=lifespan,
                  description="Learning-rate schedule search for Keras models.")
    app.state.settings = settings
    app.state.anonymous = anonymous
    # This app's memory of API key checks (service/auth/cache.py): per process, since each
    # process builds its own app.
    app.state.key_cache = KeyCache(settings.key_cache_seconds, settings.database_url)
    registry, latency = metrics.make_registry()
    app.state.metrics_registry = registry
    errors.install(app)
    for router in (catalog_router, datasets_router, roots_router, models_router,
                   studies_router, range_tests_router, notifications_router):
        app.include_router(router)
    ui.install(app)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui")

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> Any:
        """The database answers and our migrations are at head."""
        try:
            with app.state.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            current, head = migrations.current(app.state.engine), migrations.head()
        except Exception as e:  # any database failure means "not ready"
            # The full error (host, user, database) goes to the log, not to whoever asks:
            # this endpoint answers any caller on any Host.
            log.warning("readyz: database unreachable: %s", e)
            return JSONResponse(errors.body("not_ready", "database unreachable "
                                            f"({type(e).__name__}); the API's log has the "
                                            "error"), status_code=503)
        if current != head:
            return JSONResponse(errors.body("not_ready", f"migrations at {current}, head is "
                                            f"{head}: run `lrsearch migrate`"), status_code=503)
        return {"status": "ready", "migration": current}

    if settings.metrics_enabled:
        app.add_api_route("/metrics", metrics.endpoint, methods=["GET"], tags=["health"],
                          include_in_schema=False)
        app.add_middleware(metrics.RequestLatency, histogram=latency)
    app.add_middleware(DatabaseSlots, slots=settings.db_pool_size)
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(RequestOrigin, settings=settings)  # outermost: before any body is read
    return app


# `lrsearch api` (service/cli.py) runs the app through this factory, so that uvicorn can start
# it in each of --processes N processes; what the command decided travels in the environment.
APP_FACTORY = "service.main:app_from_env"
ANONYMOUS_ENV = "LRSEARCH_API_ANONYMOUS"


def api_environment(settings: Settings, *, anonymous: bool) -> dict[str, str]:
    """The variables `app_from_env` reads to build the app `create_app(settings,
    anonymous=anonymous)` would be: the allowed hosts (the one setting `lrsearch api` changes,
    adding the address it binds to) and whether requests without a key are the local tenant."""
    return {"LRSEARCH_ALLOWED_HOSTS": ",".join(settings.allowed_hosts),
            ANONYMOUS_ENV: "1" if anonymous else "0"}


def app_from_env() -> FastAPI:
    """The app of one API process: settings from the environment, and anonymous access only
    when LRSEARCH_API_ANONYMOUS is "1" (`lrsearch api` sets it on loopback or with --insecure,
    having checked the rule; absent, requests need a key)."""
    return create_app(Settings(), anonymous=os.environ.get(ANONYMOUS_ENV) == "1")
