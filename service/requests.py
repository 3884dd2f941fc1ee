"""What every work-creating request shares: configured maxima, Idempotency-Key replays, a
per-tenant lock for the active-work limits, and an insert that concurrent retries cannot
turn into a 500."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import Conflict, Invalid, TooMany

Row = TypeVar("Row")


def require_at_most(*limits: tuple[str, int, int]) -> None:
    """(name, value, maximum) triples: 422 naming the first argument over its maximum."""
    for name, value, maximum in limits:
        if value > maximum:
            raise Invalid(f"Argument `{name}` must be <= {maximum}. Received: {name}={value}",
                          field=name)


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def replay(session: Session, model: Any, tenant: str, key: str | None, digest: str) -> Any:
    """The resource an earlier request with this Idempotency-Key created, or None; 409 when
    the key was used with a different body. `model` has tenant, idempotency_key, request_hash."""
    if key is None:
        return None
    found = session.scalar(select(model).where(model.tenant == tenant,
                                               model.idempotency_key == key))
    if found is not None and found.request_hash != digest:
        raise Conflict("This Idempotency-Key was used with a different request body.",
                       field="Idempotency-Key")
    return found


def lock_tenant(session: Session, kind: str, tenant: str) -> None:
    """Hold, until the transaction ends, the lock that serialises the creation of `kind`
    ("study", "range_test") for one tenant, so that a count of its active rows followed by an
    insert cannot be interleaved with another request's (two racing requests would both see
    room under the limit).

    PostgreSQL: a transaction-scoped advisory lock on (kind, tenant). SQLite: the database's
    write lock, taken now with BEGIN IMMEDIATE (waiting up to the busy timeout) unless this
    transaction already writes. The API's SQLite connections begin a transaction only at the
    first write, so the reads before this point held no snapshot that could go stale, and the
    reads after it see every committed row."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:kind), hashtext(:tenant))"),
                        {"kind": f"lrsearch.create.{kind}", "tenant": tenant})
    else:
        _begin_sqlite_write(session)


def _begin_sqlite_write(session: Session) -> None:
    """SQLite: BEGIN IMMEDIATE unless the driver already runs a transaction (it opens one at
    the first write). Also what makes a SAVEPOINT nest: Python's sqlite3 driver would otherwise
    let the outermost SAVEPOINT start the transaction, and its RELEASE commit it."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    driver = connection.connection.driver_connection
    if driver is not None and not driver.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def require_room(session: Session, model: Any, tenant: str, limit: int, setting: str,
                 what: str) -> None:
    """429 when the tenant already has `limit` queued or running rows of `model`. Call it after
    lock_tenant, so that the count stays true until this transaction commits."""
    active = session.scalar(select(func.count()).select_from(model).where(
        model.tenant == tenant, model.status.in_(("queued", "running")))) or 0
    if active >= limit:
        raise TooMany(f"Tenant `{tenant}` already has {active} queued or running {what}, the "
                      f"limit ({setting}={limit}); wait for one to finish or cancel one.",
                      field="tenant")


def insert_once(session: Session, model: Any, tenant: str, key: str | None, digest: str,
                row: Row, after: Callable[[Row], None] | None = None) -> Row:
    """Insert `row` (and run `after(row)`, which adds what belongs to it), or, when a concurrent
    request with the same Idempotency-Key committed first, return that request's row (409 for
    a different body, as replay).

    The insert runs in a SAVEPOINT and is flushed inside it, so the unique (tenant,
    idempotency_key) violation surfaces here, not at the commit, and rolling back to the
    savepoint leaves this transaction usable for reading the winner's row."""
    _begin_sqlite_write(session)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
            if after is not None:
                after(row)
                session.flush()
    except IntegrityError:
        found = replay(session, model, tenant, key, digest)
        if found is None:  # another constraint: not a lost race
            raise
        return found
    return row
