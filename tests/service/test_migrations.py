"""Migrations: empty -> head, no drift from the models, head -> base, Optuna untouched."""

from __future__ import annotations

import pytest
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


def _datasets(engine: Engine) -> list[tuple]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text(
            "SELECT name, num_classes, task, target_shape FROM datasets ORDER BY name"))]


def test_0008_gives_existing_datasets_class_ids_and_refuses_to_lose_targets(
        settings: Settings) -> None:
    """Uploads made before 0008 hold class ids; a downgrade below it refuses while a dataset
    of float targets exists (the old schema cannot hold one), and goes once it is deleted."""
    engine = make_engine(settings.database_url)
    insert = ("INSERT INTO datasets (tenant, name, input_shape, {extra} train_samples, "
              "val_samples, sha256, size_bytes, path, created_at) VALUES ('t', :name, '[3]', "
              "{values} 8, 2, 'x', 1, '/x', CURRENT_TIMESTAMP)")
    try:
        migrations.upgrade(engine, "0007")
        with engine.begin() as c:
            c.execute(text(insert.format(extra="num_classes,", values="4,")), {"name": "old"})
        migrations.upgrade(engine, "0008")
        rows = _datasets(engine)
        assert [(r[0], r[1], r[2]) for r in rows] == [("old", 4, "classes")]
        assert rows[0][3] in ([], "[]")  # SQLite hands JSON back as text
        with engine.begin() as c:
            c.execute(text(insert.format(extra="task, target_shape,",
                                         values="'targets', '[3]',")), {"name": "reg"})
        refused = r"1 uploaded dataset\(s\) hold float targets.*t/reg"
        with pytest.raises(RuntimeError, match=refused):
            migrations.downgrade(engine, "0007")
        assert migrations.current(engine) == "0008"
        with engine.begin() as c:
            c.execute(text("DELETE FROM datasets WHERE name = 'reg'"))
        migrations.downgrade(engine, "0007")
        assert "task" not in {col["name"] for col in inspect(engine).get_columns("datasets")}
        with engine.connect() as c:
            assert c.execute(text("SELECT name, num_classes FROM datasets")).all() == [("old", 4)]
    finally:
        engine.dispose()
