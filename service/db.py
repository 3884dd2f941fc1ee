"""Engine and session helpers. Engines are built by the caller (app lifespan, command, test),
never at import time."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING = {"ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
          "ck": "ck_%(table_name)s_%(constraint_name)s",
          "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
          "pk": "pk_%(table_name)s"}

JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def db_now(session: Session) -> datetime:
    """The database server's clock (UTC), for every time two machines must agree on: leases,
    heartbeats, presence. A worker whose own clock is hours off then neither loses its lease
    nor takes a live one. SQLite lives on one host, so its clock is that host's."""
    if session.get_bind().dialect.name == "postgresql":
        value = session.scalar(text("SELECT clock_timestamp()"))
    else:
        value = datetime.strptime(
            session.scalar(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")),
            "%Y-%m-%d %H:%M:%S.%f")
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_engine(url: str, *, immediate: bool = False, pool_size: int = 5,
                max_overflow: int = 10, idle_timeout: float | None = None,
                application_name: str = "lrsearch") -> Engine:
    """SQLite: WAL, a busy timeout and foreign keys on (its folder is created); with
    `immediate`, every transaction starts with BEGIN IMMEDIATE, so a read-then-write (a job
    claim) holds the write lock from its first statement. PostgreSQL: pre-ping, so a dropped
    connection is replaced instead of failing the next statement; with `idle_timeout`, the
    server ends a transaction left idle that long (a stalled process releases its locks).

    At most `pool_size + max_overflow` connections at once. On PostgreSQL each carries
    `application_name` (pg_stat_activity shows it): "lrsearch-api" for the API's, "lrsearch-
    worker" for a worker's, "lrsearch" otherwise, so the connections of each role can be
    counted against the budget in the README."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        args = postgres_connect_args(application_name)
        if idle_timeout is not None:
            ms = int(idle_timeout * 1000)
            args["options"] = f"-c idle_in_transaction_session_timeout={ms}"
        return create_engine(url, pool_pre_ping=True, pool_size=pool_size,
                             max_overflow=max_overflow, connect_args=args)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow,
                           connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        if immediate:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    if immediate:

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def postgres_connect_args(application_name: str) -> dict[str, Any]:
    """The driver arguments naming a PostgreSQL connection's role (its application_name)."""
    return {"application_name": application_name}


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
