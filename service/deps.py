"""Request dependencies: settings, one transaction per request, the tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.auth import ops as auth
from service.config import Settings
from service.db import transaction
from service.errors import Unauthorized

LOCAL_TENANT = "local"


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    yield from transaction(request.app.state.sessions)


# scope="function": commit when the handler returns, before the response is sent, so a client
# that gets 201 can read what it created at once.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_tenant(request: Request, session: SessionDep) -> str:
    """The caller's tenant, from `Authorization: Bearer <key>`. Without a key, requests are the
    single local tenant only while no key was ever created and the app allows it (bound to
    loopback, or started with --insecure)."""
    return resolve_tenant(request, session)


def resolve_tenant(request: Request, session: Session, web_session: str | None = None) -> str:
    """get_tenant's rule; the web page also accepts the session token of its login cookie
    (a Bearer header, when sent, wins)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("The Authorization header must be `Bearer <key>`.",
                               field="Authorization")
        tenant = auth.authenticate(session, key.strip())
        if tenant is None:
            raise Unauthorized("Invalid or revoked API key.", field="Authorization")
        return tenant
    if web_session:
        tenant = auth.web_session_tenant(session, web_session)
        if tenant is None:
            raise Unauthorized("Your session has ended (logged out, expired, or its key was "
                               "revoked): log in again.", field="session")
        return tenant
    if request.app.state.anonymous and not auth.any_key_ever(session):
        return LOCAL_TENANT
    raise Unauthorized("Missing API key: send `Authorization: Bearer <key>`.",
                       field="Authorization")


SettingsDep = Annotated[Settings, Depends(get_settings)]
TenantDep = Annotated[str, Depends(get_tenant)]
