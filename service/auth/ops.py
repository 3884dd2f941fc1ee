"""API keys: create (shown once), list, revoke, authenticate.

A key looks like `lrs_<prefix>_<secret>`: the prefix (8 hex characters) identifies the row, the
secret has 256 bits of entropy, and the row keeps only sha256(key). Keys are random, not
passwords, so a fast hash is enough; the comparison is constant-time, and an unknown prefix
costs the same comparison as a known one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.auth.models import ApiKey
from service.db import utcnow
from service.errors import Invalid, NotFound

TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
KEY = re.compile(r"^lrs_([0-9a-f]{8})_[A-Za-z0-9_-]{20,100}$")
_DUMMY = hashlib.sha256(b"no such key").hexdigest()


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT.match(tenant):
        raise Invalid("Argument `tenant` must be 1-64 lowercase letters, digits, '_' or '-'. "
                      f"Received: tenant={tenant!r}", field="tenant")
    return tenant


def create(session: Session, tenant: str, name: str | None = None) -> tuple[ApiKey, str]:
    """A new key for `tenant`; returns the row and the key (which is not stored)."""
    check_tenant(tenant)
    prefix = secrets.token_hex(4)
    while session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is not None:
        prefix = secrets.token_hex(4)
    key = f"lrs_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(prefix=prefix, key_hash=_hash(key), tenant=tenant, name=name)
    session.add(row)
    session.flush()
    return row, key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at)))


def revoke(session: Session, prefix: str) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None:
        raise NotFound(f"No API key with prefix `{prefix}`.", field="prefix")
    row.revoked_at = row.revoked_at or utcnow()
    session.flush()
    return row


def any_active(session: Session) -> bool:
    return bool(session.scalar(select(func.count()).select_from(ApiKey)
                               .where(ApiKey.revoked_at.is_(None))))


def authenticate(session: Session, key: str) -> str | None:
    """The tenant of an active key, or None."""
    match = KEY.match(key)
    row = None
    if match is not None:
        row = session.scalar(select(ApiKey).where(ApiKey.prefix == match.group(1)))
    expected = row.key_hash if row is not None else _DUMMY
    ok = hmac.compare_digest(expected, _hash(key))
    if not ok or row is None or row.revoked_at is not None:
        return None
    return row.tenant
