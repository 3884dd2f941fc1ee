"""Alembic environment for lrsearch's own tables.

Our version table is `lrsearch_alembic_version`, so Optuna's `alembic_version` (wherever its
storage lives) is never touched; autogenerate only looks at our own tables.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, pool

from alembic import context
from service.tables import metadata

VERSION_TABLE = "lrsearch_alembic_version"
config = context.config


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    return type_ != "table" or name in metadata.tables


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(
            config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool
        )
        with engine.connect() as conn:
            _migrate(conn)
        return
    _migrate(connection)


def _migrate(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
