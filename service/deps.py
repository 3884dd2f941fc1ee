"""Request dependencies: settings, one transaction per request, the tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import transaction

LOCAL_TENANT = "local"


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    yield from transaction(request.app.state.sessions)


def get_tenant() -> str:
    """Every resource belongs to a tenant; without API keys there is one local tenant."""
    return LOCAL_TENANT


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": commit when the handler returns, before the response is sent, so a client
# that gets 201 can read what it created at once.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
TenantDep = Annotated[str, Depends(get_tenant)]
