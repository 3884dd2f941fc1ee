"""`lrsearch migrate`: our schema through Alembic, and Optuna's storage in its own place."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from alembic import command
from service.config import OPTUNA_SCHEMA, Settings

SCRIPTS = Path(__file__).resolve().parent.parent / "alembic"
VERSION_TABLE = "lrsearch_alembic_version"
# The PostgreSQL advisory lock `migrate` holds: runs against one database take turns.
MIGRATE_LOCK = 0x6C72736561726368  # "lrsearch"


def alembic_config(engine: Engine) -> Config:
    if not (SCRIPTS / "env.py").exists():  # e.g. a non-editable install without the checkout
        raise RuntimeError(f"the migration scripts are not at {SCRIPTS}: run lrsearch from a "
                           "checkout (pip install -e .), as the Dockerfile does")
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["engine"] = engine
    return cfg


def _run(engine: Engine, action: str, revision: str) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        getattr(command, action)(cfg, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    _run(engine, "downgrade", revision)


def _scripts() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    return ScriptDirectory.from_config(cfg)


@functools.cache
def head() -> str:
    """The revision this code's migrations end at: the schema the code is written for (read
    once: /readyz asks at every probe)."""
    revision = _scripts().get_current_head()
    assert revision is not None
    return revision


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision among this code's migration scripts (read once: the code a process
    runs does not change under it)."""
    return frozenset(script.revision for script in _scripts().walk_revisions())


def current(bind: Engine | Connection) -> str | None:
    """The database's revision of our schema; None for a database never migrated (no version
    table yet). What /readyz and a starting worker compare with `head()`."""
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            return current(connection)
    context = MigrationContext.configure(bind, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def revision(connection: Connection) -> str | None:
    """`current` in one query, for a check made at every job claim:
    `SELECT version_num FROM lrsearch_alembic_version`. Unlike `current`, it does not look
    for the table first, so on a database never migrated the query fails (on PostgreSQL
    that also aborts the caller's transaction). None when the table has no row."""
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) > 1:  # our history is one line; several rows would be a branched schema
        raise RuntimeError(f"{VERSION_TABLE} has {len(rows)} rows ({', '.join(rows)}); "
                           "lrsearch's migrations have a single head")
    return rows[0] if rows else None


def mismatch(found: str | None, expected: str) -> str | None:
    """None when the database's revision `found` is `expected` (the code's head); otherwise
    the reason, naming both and what to do: a database behind the code (or never migrated)
    needs `lrsearch migrate`; one at a revision these scripts do not know was migrated by a
    newer release, and this program needs upgrading instead."""
    if found == expected:
        return None
    if found is None:
        return (f"the database has no lrsearch schema yet, this code expects revision "
                f"{expected}: run `lrsearch migrate`")
    if found in known_revisions():
        return (f"found database schema revision {found}, this code expects {expected}: run "
                "`lrsearch migrate`")
    return (f"found database schema revision {found}, this code expects {expected}: {found} "
            "is not one of this code's migrations, so a newer release migrated the database; "
            "upgrade this program to that release")


def setup_optuna(settings: Settings) -> str:
    """Create Optuna's tables in its own storage (schema `optuna` on PostgreSQL by default)."""
    import optuna

    url = settings.optuna_url()
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and not settings.optuna_storage:
        from sqlalchemy import create_engine

        engine = create_engine(parsed.difference_update_query(["options"]))
        with engine.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
        engine.dispose()
    elif parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    optuna.storages.RDBStorage(url)  # creates or upgrades Optuna's own tables
    return url


def migrate(settings: Settings, engine: Engine) -> None:
    """Upgrade our schema to head and create or upgrade Optuna's storage. Safe to run from
    several processes at once (every API pod's init container on Kubernetes): on PostgreSQL
    they take turns (`_one_at_a_time`), and each after the first finds nothing left to do."""
    with _one_at_a_time(engine):
        upgrade(engine)
        setup_optuna(settings)


@contextmanager
def _one_at_a_time(engine: Engine) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock MIGRATE_LOCK for the block, on a connection of its own.
    Without it, two concurrent upgrades both see the old revision and the second fails on the
    first's tables (`DuplicateTable`). The server releases the lock if this process dies.
    Only PostgreSQL, the database shared by several machines, takes it: SQLite serves one
    machine, where one `lrsearch serve` or `lrsearch migrate` migrates."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATE_LOCK})
        connection.commit()  # the lock is the session's; no transaction stays open meanwhile
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATE_LOCK})
            connection.commit()
