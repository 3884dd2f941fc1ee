"""API keys: create (shown once), list, revoke, authenticate; and the web page's sessions.

A key looks like `lrs_<prefix>_<secret>`: the prefix (8 hex characters) identifies the row, the
secret has 256 bits of entropy, and the row keeps only sha256(key). Keys are random, not
passwords, so a fast hash is enough; the comparison is constant-time, and an unknown prefix
costs the same comparison as a known one.

A web page login opens a session: the browser's cookie holds a random token that is not the
key and from which the key cannot be derived; the row keeps the token's sha256, its tenant and
the key it was opened with, so revoking that key ends it.

`authenticate` and `any_key_ever` take an optional KeyCache (service/auth/cache.py, whose
docstring states how stale an answer may be); `create` and `revoke` tell this process's caches
once their transaction commits.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from sqlalchemy import delete, event, select
from sqlalchemy.orm import Session

from service.auth import cache as key_cache
from service.auth.cache import KeyCache
from service.auth.models import ApiKey, WebSession
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
    database = session.get_bind().engine.url
    event.listen(session, "after_commit", lambda _s: key_cache.key_created(database), once=True)
    return row, key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at)))


def revoke(session: Session, prefix: str) -> ApiKey:
    """Revoke a key; the web page sessions it opened end with it. This process's key caches
    forget it at once; an API process elsewhere stops accepting it within its
    LRSEARCH_KEY_CACHE_SECONDS (service/auth/cache.py)."""
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None:
        raise NotFound(f"No API key with prefix `{prefix}`.", field="prefix")
    row.revoked_at = row.revoked_at or utcnow()
    session.execute(delete(WebSession).where(WebSession.api_key_id == row.id))
    session.flush()
    # Forgotten now (a check running meanwhile remembers nothing), and again once committed:
    # a check that read the row before the commit may have remembered it in between.
    digest = row.key_hash
    key_cache.forget_everywhere(digest)
    event.listen(session, "after_commit", lambda _s: key_cache.forget_everywhere(digest),
                 once=True)
    return row


def any_key_ever(session: Session, cache: KeyCache | None = None) -> bool:
    """Whether a key was ever created, revoked ones included. Anonymous access ends with the
    first key for good: revoking the last key must lock the server, not open it. With a
    cache, "yes" is remembered for good and "no" for its seconds."""
    known = cache.keys_exist() if cache is not None else None
    if known is not None:
        return known
    ticket = cache.ticket() if cache is not None else (0.0, 0)
    exist = session.scalar(select(ApiKey.id).limit(1)) is not None
    if cache is not None:
        cache.remember_keys_exist(exist, ticket)
    return exist


def authenticate_key(session: Session, key: str, digest: str | None = None) -> ApiKey | None:
    """The row of an active key, or None (`digest`: the key's sha256, when already known)."""
    match = KEY.match(key)
    row = None
    if match is not None:
        row = session.scalar(select(ApiKey).where(ApiKey.prefix == match.group(1)))
    expected = row.key_hash if row is not None else _DUMMY
    ok = hmac.compare_digest(expected, digest or _hash(key))
    if not ok or row is None or row.revoked_at is not None:
        return None
    return row


def authenticate(session: Session, key: str, cache: KeyCache | None = None) -> str | None:
    """The tenant of an active key, or None. With a cache, a key found active is remembered
    (by its sha256) for the cache's seconds; a refused key is checked again every time, so a
    new key works at once.

    A cached answer is found by the key's sha256, as the database row is: which entry a
    lookup reaches, and how long it takes, depends on the digest, which a caller cannot steer
    towards a stored one without the key itself."""
    digest = _hash(key)
    if cache is not None:
        tenant = cache.tenant(digest)
        if tenant is not None:
            return tenant
    ticket = cache.ticket() if cache is not None else (0.0, 0)
    row = authenticate_key(session, key, digest)
    if row is None:
        return None
    if cache is not None:
        cache.remember(digest, row.tenant, ticket)
    return row.tenant


def cached_tenant(cache: KeyCache, key: str) -> str | None:
    """The tenant `authenticate` would answer from the cache alone, without a session; None
    when the database must be asked."""
    return cache.tenant(_hash(key)) if cache.enabled else None


def open_web_session(session: Session, key: ApiKey, seconds: float) -> str:
    """A new web page session for an authenticated key; returns its token (256 random bits),
    which only the browser's cookie holds: the row keeps its sha256. Expired sessions of any
    key are swept on the way, so the table does not grow with every login."""
    now = utcnow()
    session.execute(delete(WebSession).where(WebSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    session.add(WebSession(id_hash=_hash(token), tenant=key.tenant, api_key_id=key.id,
                           created_at=now, expires_at=now + timedelta(seconds=seconds)))
    session.flush()
    return token


def web_session_tenant(session: Session, token: str) -> str | None:
    """The tenant of a live session: known, not expired, and its key not revoked."""
    if not token or len(token) > 100:
        return None
    return session.scalar(select(WebSession.tenant)
                          .join(ApiKey, ApiKey.id == WebSession.api_key_id)
                          .where(WebSession.id_hash == _hash(token),
                                 WebSession.expires_at > utcnow(),
                                 ApiKey.revoked_at.is_(None)))


def close_web_session(session: Session, token: str) -> None:
    """Log out: the session's row is deleted, so its cookie is worthless even if kept."""
    session.execute(delete(WebSession).where(WebSession.id_hash == _hash(token)))
    session.flush()
