"""Database fixtures shared by the service and worker tests: every test that uses
`database_url` runs on SQLite and, when LRSEARCH_TEST_POSTGRES_URL is set (.ci/run sets it), on
a fresh PostgreSQL database created for the test and dropped after. A test that only makes
sense on one backend overrides the parameter with
`@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)`.

A test that requests `engine` (directly or through `client`) starts from a copy of a database
migrated once per session (`_sqlite_template`, `_postgres_template`): `engine` still runs
`migrations.migrate`, which then finds nothing to do. The copy holds what a migration of an
empty database leaves, Optuna's storage included (SQLite: optuna.db beside our file;
PostgreSQL: the `optuna` schema of the same database). A test that does not request `engine`
gets an empty database, as the migration tests need."""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from service import migrations
from service.config import Settings
from service.db import make_engine
from service.main import create_app

PG_URL = os.environ.get("LRSEARCH_TEST_POSTGRES_URL")
# Where `database_url` puts a test's SQLite database, under the test's tmp_path; Optuna's
# storage goes beside it (Settings.optuna_url), so the folder holds everything migrated.
SQLITE_FOLDER = "db"
SQLITE_FILE = "lrsearch.db"


def _admin(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT")


def _wants_migrated(request: pytest.FixtureRequest) -> bool:
    """Whether the test will migrate its database through `engine`: only then may it start
    from the migrated template (the test's whole fixture closure, so `client` counts)."""
    return "engine" in request.fixturenames


def _migrate_template(database_url: str, data_dir: Path) -> None:
    """Migrate a template database as `engine` would, then leave no connection to it open:
    Optuna's storage (setup_optuna) keeps its engine's pool until it is collected."""
    engine = make_engine(database_url)
    try:
        migrations.migrate(Settings(database_url=database_url, data_dir=data_dir), engine)
    finally:
        engine.dispose()
        gc.collect()  # closes the pooled connections of Optuna's discarded RDBStorage


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a SQLite database migrated to head and its Optuna storage
    (optuna.db), made once per session; `database_url` copies the folder for a test."""
    root = tmp_path_factory.mktemp("migrated_sqlite")
    folder = root / SQLITE_FOLDER
    _migrate_template(f"sqlite:///{folder / SQLITE_FILE}", root / "data")
    # Fold the WAL into the main file: the last connection to close removes -wal and -shm,
    # so the copy is the files alone, as any process would open them.
    with closing(sqlite3.connect(folder / SQLITE_FILE)) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return folder


@pytest.fixture(scope="session")
def _postgres_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The name of a PostgreSQL database migrated to head once per session, closed to
    connections so that CREATE DATABASE ... TEMPLATE can copy it (it refuses while anyone is
    connected to the template). The name is unique, so that test runs on one server at the
    same time do not share it; it is dropped at the end of the session."""
    assert PG_URL
    name = f"lrsearch_template_{uuid.uuid4().hex[:12]}"
    admin = _admin(PG_URL)
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        _migrate_template(url, tmp_path_factory.mktemp("migrated_postgres") / "data")
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            # Whatever connection is still open (none should be) is ended, waiting up to 5 s.
            c.execute(text("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                           "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
        yield name
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new PostgreSQL database on the test server: empty, or a copy of `_postgres_template`
    for a test that requests `engine`."""
    if not PG_URL:
        pytest.skip("LRSEARCH_TEST_POSTGRES_URL is not set (CI sets it)")
    template = ""
    if _wants_migrated(request):
        template = f' TEMPLATE "{request.getfixturevalue("_postgres_template")}"'
    name = f"lrsearch_test_{uuid.uuid4().hex[:12]}"
    admin = _admin(PG_URL)
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"{template}'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test's database: SQLite under tmp_path (not created yet, or a copy of
    `_sqlite_template` for a test that requests `engine`), or `postgres_url`."""
    if request.param == "sqlite":
        folder = tmp_path / SQLITE_FOLDER
        if _wants_migrated(request):
            shutil.copytree(request.getfixturevalue("_sqlite_template"), folder)
        return f"sqlite:///{folder / SQLITE_FILE}"
    url: str = request.getfixturevalue("postgres_url")
    return url


# FastAPI's TestClient sends `Host: testserver`; the default allowed hosts stay as they are.
TEST_HOSTS = [*Settings.model_fields["allowed_hosts"].get_default(), "testserver"]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path / "data", max_epochs=100,
                    max_trials=50, max_batch_size=4096, max_body_bytes=200_000,
                    max_upload_bytes=300_000, max_num_iter=1000, max_repeats=5,
                    allowed_hosts=TEST_HOSTS)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """The test's database, migrated (from the session's template it is already at head, and
    `migrate` only confirms it: a template behind the code would still be brought up)."""
    engine = make_engine(settings.database_url)
    migrations.migrate(settings, engine)
    yield engine
    engine.dispose()


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c
