"""Migrations: empty -> head, no drift from the models, head -> base, Optuna untouched."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

from service import migrations
from service.config import OPTUNA_SCHEMA, Settings
from service.db import make_engine
from service.tables import metadata

OURS = set(metadata.tables)


def optuna_state(settings: Settings) -> tuple[set[str], list[tuple]]:
    """Optuna's tables and its own alembic_version rows."""
    url = settings.optuna_url()
    engine = create_engine(url)
    try:
        schema = None if engine.dialect.name == "sqlite" else OPTUNA_SCHEMA
        tables = set(inspect(engine).get_table_names(schema=schema))
        prefix = "" if schema is None else f"{schema}."
        with engine.connect() as c:
            version = [tuple(r) for r in c.execute(text(f"SELECT * FROM {prefix}alembic_version"))]
        return tables, version
    finally:
        engine.dispose()


def drift(engine: Engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "version_table": migrations.VERSION_TABLE, "compare_type": True,
            "include_name": lambda name, type_, parent: type_ != "table" or name in OURS})
        return compare_metadata(context, metadata)


def test_upgrade_matches_models_downgrade_works_and_optuna_is_untouched(
        settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        migrations.setup_optuna(settings)
        optuna_before = optuna_state(settings)
        assert "trials" in optuna_before[0] and optuna_before[1]
        migrations.upgrade(engine)
        assert migrations.current(engine) == migrations.head()
        assert set(inspect(engine).get_table_names()) >= OURS
        assert drift(engine) == []
        migrations.downgrade(engine)
        assert migrations.current(engine) is None
        assert not OURS & set(inspect(engine).get_table_names())
        assert optuna_state(settings) == optuna_before
        migrations.upgrade(engine)  # and back up again, cleanly
        assert drift(engine) == [] and optuna_state(settings) == optuna_before
    finally:
        engine.dispose()


def test_optuna_storage_is_kept_apart(settings: Settings) -> None:
    url = settings.optuna_url()
    if settings.database_url.startswith("sqlite"):
        assert url.endswith("/optuna.db") and url != settings.database_url
    else:
        assert "search_path" in url and OPTUNA_SCHEMA in url
