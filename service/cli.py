"""The installed `lrsearch` command: the library's commands plus the service's.

    lrsearch migrate                   upgrade our schema and set up Optuna's storage
    lrsearch api --host --port         the HTTP API (uvicorn)
    lrsearch serve --host --port       the one-machine default: migrate, then the API, with
                                       SQLite under ./.lrsearch/ unless LRSEARCH_DATABASE_URL
                                       says otherwise
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from lrsearch import cli as library_cli


def cmd_migrate(args: argparse.Namespace) -> None:
    from service import migrations
    from service.config import Settings
    from service.db import make_engine

    settings = Settings()
    engine = make_engine(settings.database_url)
    try:
        migrations.migrate(settings, engine)
    finally:
        engine.dispose()
    print(f"migrated {engine.url.render_as_string(hide_password=True)} to "
          f"{migrations.head()}; Optuna storage ready")


def cmd_api(args: argparse.Namespace) -> None:
    import uvicorn

    from service.main import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level)


def cmd_serve(args: argparse.Namespace) -> None:
    cmd_migrate(args)
    cmd_api(args)


def add_commands(sub: Any) -> None:
    p = sub.add_parser("migrate", help="upgrade the database schema (ours and Optuna's)")
    p.set_defaults(func=cmd_migrate)
    for name, func, text in (("api", cmd_api, "run the HTTP API"),
                             ("serve", cmd_serve, "migrate, then run the API (one machine)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--log-level", default="info")
        p.set_defaults(func=func)


def main(argv: Sequence[str] | None = None) -> int:
    return library_cli.main(argv, extend=add_commands)


if __name__ == "__main__":
    sys.exit(main())
