"""Database fixtures shared by the service and worker tests: every test that uses
`database_url` runs on SQLite and, when LRSEARCH_TEST_POSTGRES_URL is set (.ci/run sets it), on
a fresh PostgreSQL database created for the test and dropped after. A test that only makes
sense on one backend overrides the parameter with
`@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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


def _admin(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server."""
    if not PG_URL:
        pytest.skip("LRSEARCH_TEST_POSTGRES_URL is not set (CI sets it)")
    name = f"lrsearch_test_{uuid.uuid4().hex[:12]}"
    admin = _admin(PG_URL)
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/lrsearch.db"
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
    engine = make_engine(settings.database_url)
    migrations.migrate(settings, engine)
    yield engine
    engine.dispose()


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c
