"""The `lrsearch` command line (click; rich for tables and progress).

Client commands talk to a running server (`--url` / LRSEARCH_URL, `--api-key` /
LRSEARCH_API_KEY): submit, wait, status, trials, export, best, plot, cancel, delete,
range-test, datasets, models.
Library commands need no server: schedules (list, show, preview), local (range-test, train,
demo). Other installed packages add commands under the `lrsearch.commands` entry-point group
(pyproject.toml): the service's migrate, api, keys and serve (service/cli.py) and the worker's
worker and reaper (worker/cli.py). Loading them by group name keeps this package free of
imports of theirs; a package that is not installed adds no command.

A group run without a sub-command runs its `list` (`lrsearch schedules`, `lrsearch datasets`,
`lrsearch models`, `lrsearch keys`), or prints its help and exits 0 when it has none
(`lrsearch local`): see `_list_by_default`.

Errors print the API's or the library's message (which names the field and the value), never
a traceback: exit code 2 for rejected input, 1 for anything else (unreachable server, failed
study, timeout).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, distributions
from typing import Any

import click

from lrsearch.client import ClientError
from lrsearch.errors import LRSearchError

COMMANDS_GROUP = "lrsearch.commands"


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
    for entry in _installed_commands():
        if entry.name not in cli.commands:  # ours win
            command = _load(entry)
            if command is not None:
                cli.add_command(command, entry.name)
    for command in cli.commands.values():
        _list_by_default(command)


def _list_by_default(command: click.Command) -> None:
    """Make a group (and each group under it) that needs a sub-command run its `list` when
    given none, with the list's defaults (its options still read their environment
    variables), or print its help and exit 0 when it has no `list`: click's own answer is the
    usage and exit status 2, an error for what is only a question. A group that already runs
    on its own (`range-test`) is left as it is. Applied to the installed packages' groups too,
    so every group behaves the same."""
    if not isinstance(command, click.Group):
        return
    for sub in command.commands.values():
        _list_by_default(sub)
    if command.invoke_without_command:
        return
    group = command
    callback: Callable[..., Any] = group.callback or (lambda: None)

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        result = callback(*args, **kwargs)
        ctx = click.get_current_context()
        if ctx.invoked_subcommand is not None:
            return result
        listing = group.commands.get("list")
        if listing is None:
            click.echo(ctx.get_help())
            ctx.exit(0)
        with listing.make_context("list", [], parent=ctx) as sub:
            return listing.invoke(sub)

    group.callback = run
    group.invoke_without_command = True
    group.no_args_is_help = False


def _installed_commands() -> list[EntryPoint]:
    """The entry points of COMMANDS_GROUP, one per name, of every distribution on sys.path
    (as pluggy loads plugins: a stale metadata folder earlier on the path, such as an old
    lrsearch.egg-info in the working directory, then hides no command)."""
    found: dict[str, EntryPoint] = {}
    for dist in distributions():
        for entry in dist.entry_points.select(group=COMMANDS_GROUP):
            found.setdefault(entry.name, entry)
    return sorted(found.values(), key=lambda e: e.name)


def _load(entry: EntryPoint) -> click.Command | None:
    """The command an entry point names; None, quietly, when its package is not installed,
    and with a warning when it cannot be loaded for another reason (the other commands must
    keep working)."""
    try:
        command = entry.load()
    except ModuleNotFoundError as e:
        if e.name and (entry.module == e.name or entry.module.startswith(f"{e.name}.")):
            return None
        problem = f"{type(e).__name__}: {e}"
    except Exception as e:
        problem = f"{type(e).__name__}: {e}"
    else:
        if isinstance(command, click.Command):
            return command
        problem = f"{type(command).__name__} is not a click command"
    click.echo(f"warning: command `{entry.name}` ({entry.value}) not loaded: {problem}",
               err=True)
    return None


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
