"""`lrsearch migrate`: our schema through Alembic, and Optuna's storage in its own place."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from alembic import command
from service.config import OPTUNA_SCHEMA, Settings

SCRIPTS = Path(__file__).resolve().parent.parent / "alembic"
VERSION_TABLE = "lrsearch_alembic_version"


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


def head() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    revision = ScriptDirectory.from_config(cfg).get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


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
    upgrade(engine)
    setup_optuna(settings)
