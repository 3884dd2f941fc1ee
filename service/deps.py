"""Request dependencies: settings, one transaction per request, the tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio.to_thread
from anyio import CancelScope, CapacityLimiter
from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.auth import ops as auth
from service.auth.cache import KeyCache
from service.config import Settings
from service.errors import Unauthorized

LOCAL_TENANT = "local"


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _settings(request: Request) -> Settings:
    """SettingsDep's dependency: async, since FastAPI runs a plain `def` dependency in the
    thread pool, a hop per request for an attribute read."""
    return get_settings(request)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request: committed when the handler returns, rolled back if it raises,
    closed either way.

    async, to spare a thread-pool hop per request: opening a session does no I/O (it connects
    at its first statement), so it happens in the event loop. Its end, which may do I/O, runs
    in a worker thread when the session began a transaction (else closing it is no I/O),
    shielded from cancellation and outside the thread pool's limit, as FastAPI ends a plain
    `def` dependency: a request that holds a connection must not wait for a free thread to give
    it back (DatabaseSlots, service/main.py)."""
    session: Session = request.app.state.sessions()
    try:
        yield session
    except BaseException:
        await _end(session, commit=False)
        raise
    await _end(session, commit=True)


async def _end(session: Session, *, commit: bool) -> None:
    if not session.in_transaction():
        session.close()
        return
    with CancelScope(shield=True):
        await anyio.to_thread.run_sync(_finish, session, commit, limiter=CapacityLimiter(1))


def _finish(session: Session, commit: bool) -> None:
    with session:
        if not commit:
            session.rollback()
            return
        try:
            session.commit()
        except BaseException:
            session.rollback()
            raise


# scope="function": commit when the handler returns, before the response is sent, so a client
# that gets 201 can read what it created at once.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def get_tenant(request: Request, session: SessionDep) -> str:
    """The caller's tenant, from `Authorization: Bearer <key>`. Without a key, requests are the
    single local tenant only while no key was ever created and the app allows it (bound to
    loopback, or started with --insecure).

    A key the app's KeyCache remembers is answered here, in the event loop; anything else
    goes to the thread pool, where the database is asked (the same rule either way)."""
    tenant = _from_cache(request)
    if tenant is not None:
        return tenant
    return await run_in_threadpool(resolve_tenant, request, session)


def _from_cache(request: Request) -> str | None:
    """get_tenant's answer from the cache alone, or None (ask the database)."""
    cache: KeyCache = request.app.state.key_cache
    header = request.headers.get("authorization")
    if header is not None:
        key = _bearer_key(header)
        return None if key is None else auth.cached_tenant(cache, key)
    if request.app.state.anonymous and cache.keys_exist() is False:
        return LOCAL_TENANT
    return None


def _bearer_key(header: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` header; None when it is not one."""
    scheme, _, key = header.partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def resolve_tenant(request: Request, session: Session, web_session: str | None = None) -> str:
    """get_tenant's rule; the web page also accepts the session token of its login cookie
    (a Bearer header, when sent, wins)."""
    header = request.headers.get("authorization")
    if header is not None:
        key = _bearer_key(header)
        if key is None:
            raise Unauthorized("The Authorization header must be `Bearer <key>`.",
                               field="Authorization")
        tenant = auth.authenticate(session, key, request.app.state.key_cache)
        if tenant is None:
            raise Unauthorized("Invalid or revoked API key.", field="Authorization")
        return tenant
    if web_session:
        tenant = auth.web_session_tenant(session, web_session)
        if tenant is None:
            raise Unauthorized("Your session has ended (logged out, expired, or its key was "
                               "revoked): log in again.", field="session")
        return tenant
    if request.app.state.anonymous and not auth.any_key_ever(session,
                                                             request.app.state.key_cache):
        return LOCAL_TENANT
    raise Unauthorized("Missing API key: send `Authorization: Bearer <key>`.",
                       field="Authorization")


SettingsDep = Annotated[Settings, Depends(_settings)]
TenantDep = Annotated[str, Depends(get_tenant)]
