"""The `lrsearch` command line (click; rich for tables and progress).

Client commands talk to a running server (`--url` / LRSEARCH_URL, `--api-key` /
LRSEARCH_API_KEY): submit, status, trials, best, plot, cancel, delete, range-test, datasets.
Library commands need no server: schedules (list, show, preview), local (range-test, train,
demo). The server commands (migrate, api, worker, serve, keys) are added by service/cli.py,
the installed entry point.

Errors print the API's or the library's message (which names the field and the value), never
a traceback: exit code 2 for rejected input, 1 for anything else (unreachable server, failed
study, timeout).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from lrsearch.client import ClientError
from lrsearch.errors import LRSearchError


class Group(click.Group):
    """Turns our errors into a one-line message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LRSearchError as e:
            _fail(str(e), 2)
        except ClientError as e:
            bad_input = 400 <= e.status < 500 and e.status not in (401, 404, 409, 429)
            field = f" [{e.field}]" if e.field and e.field not in e.detail else ""
            prefix = f"HTTP {e.status} {e.type}: " if e.status else ""
            _fail(f"{prefix}{e.detail}{field}", 2 if bad_input else 1)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"],
                                          "max_content_width": 100})
@click.version_option(package_name="lrsearch", prog_name="lrsearch")
def cli() -> None:
    """lrsearch: learning-rate schedule search for Keras models.

    \b
    Quick start (one machine):
      lrsearch serve                       # API + a worker, SQLite under ./.lrsearch
      lrsearch submit --family one_cycle --dataset digits --epochs 5 --n-trials 10 --wait
      lrsearch range-test --dataset digits --wait --plot lr_find.png
      open http://127.0.0.1:8000/ui
    """


def _register() -> None:
    from lrsearch.cli import local, remote

    local.register(cli)
    remote.register(cli)


_register()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="lrsearch",
                 standalone_mode=True)
    except SystemExit as e:
        if isinstance(e.code, str):  # SystemExit("error: ...") from a command
            click.echo(e.code, err=True)
            return 1
        return e.code if isinstance(e.code, int) else 0
    return 0
