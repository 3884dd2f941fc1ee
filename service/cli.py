"""The server's commands, added to the `lrsearch` command line through the `lrsearch.commands`
entry-point group (pyproject.toml), so that neither package imports the other's commands:

    lrsearch migrate                   upgrade our schema and set up Optuna's storage
    lrsearch api --host --port         the HTTP API (uvicorn)
    lrsearch keys create --tenant T    a new API key (printed once); keys list; keys revoke P
    lrsearch keys webhook-secret --tenant T [--rotate]
                                       the secret signing T's study-end notifications
                                       (printed once)
    lrsearch serve --host --port --workers N | --per-gpu N  [--backend B]
                                       the one-machine default: migrate, then the API, N
                                       workers (one per GPU where there are GPUs; --per-gpu:
                                       N on each GPU) and a reaper; SQLite under ./.lrsearch/
                                       unless LRSEARCH_DATABASE_URL says otherwise; Ctrl-C
                                       stops all

`lrsearch worker` and `lrsearch reaper` are the worker package's (worker/cli.py); `serve` runs
them as processes by command name. Heavy imports (SQLAlchemy, FastAPI) happen inside the
commands: every `lrsearch` invocation loads this module.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from service.config import Settings

WORKER_COMMANDS = ("worker", "reaper")  # what `serve` runs, by name (worker/cli.py)
KERAS_BACKENDS = ("tensorflow", "jax", "torch")  # what `lrsearch worker --backend` takes


@contextmanager
def server_errors() -> Iterator[None]:
    """The service's errors as a one-line message and an exit code: an APIError (keys revoke
    of an unknown prefix, a bad tenant name, ...) exits 2 with its detail; a database error (a
    database that is not there or not migrated) exits 1, naming the setting to check."""
    from sqlalchemy.exc import DBAPIError

    from service.errors import APIError

    try:
        yield
    except APIError as e:
        _fail(f"error: {e.detail}", 2)
    except DBAPIError as e:
        _fail(f"error: database error: {str(e.orig).strip()}. Is LRSEARCH_DATABASE_URL "
              "right, and has `lrsearch migrate` run?", 1)


class ServerCommand(click.Command):
    """A server command: its errors are reported by `server_errors`."""

    def invoke(self, ctx: click.Context) -> Any:
        with server_errors():
            return super().invoke(ctx)


class ServerGroup(click.Group):
    """A group of server commands: their errors are reported by `server_errors`."""

    def invoke(self, ctx: click.Context) -> Any:
        with server_errors():
            return super().invoke(ctx)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def setup_logging(level: str = "INFO") -> None:
    """The log format of every server process (API, workers, reaper)."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s "
                        "[%(process)d] %(message)s")


@click.command("migrate", cls=ServerCommand)
def cmd_migrate() -> None:
    """Upgrade the database schema (ours and Optuna's)."""
    from service import migrations
    from service.config import Settings
    from service.db import make_engine

    settings = Settings()
    engine = make_engine(settings.database_url)
    try:
        migrations.migrate(settings, engine)
    finally:
        engine.dispose()
    click.echo(f"migrated {engine.url.render_as_string(hide_password=True)} to "
          f"{migrations.head()}; Optuna storage ready")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _with_session(fn: Any) -> Any:
    from sqlalchemy.orm import Session

    from service.config import Settings
    from service.db import make_engine

    engine = make_engine(Settings().database_url)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            return fn(session)
    finally:
        engine.dispose()


def server_options(f: Any) -> Any:
    for option in reversed([
        click.option("--host", default="127.0.0.1", show_default=True),
        click.option("--port", type=int, default=8000, show_default=True),
        click.option("--log-level", default="info", show_default=True),
        click.option("--insecure", is_flag=True,
                     help="on a non-loopback address, accept requests without API keys"),
    ]):
        f = option(f)
    return f


MAX_API_PROCESSES = 64


@click.command("api", cls=ServerCommand)
@server_options
@click.option("--processes", type=click.IntRange(1, MAX_API_PROCESSES), default=1,
              show_default=True,
              help="API processes sharing the port (each with its own database pool: "
                   "LRSEARCH_DB_POOL_SIZE connections)")
def cmd_api(host: str, port: int, log_level: str, insecure: bool, processes: int = 1) -> None:
    """Run the HTTP API (and the web page at /ui)."""
    import uvicorn

    from service.auth import ops as auth
    from service.config import Settings
    from service.main import APP_FACTORY, api_environment

    loopback = is_loopback(host)
    if not loopback and not insecure and not _with_session(auth.any_key_ever):
        raise SystemExit(
            f"error: refusing to serve on {host} without API keys: anyone who can reach "
            "it could submit work and read results. Create a key with `lrsearch keys create "
            "--tenant NAME`, bind to 127.0.0.1, or pass --insecure to accept anonymous "
            "requests anyway.")
    # What this command decided reaches each process's app through the environment: with
    # --processes N, uvicorn starts N processes that each import the app factory.
    settings = with_bind_host(Settings(), host)
    os.environ.update(api_environment(settings, anonymous=loopback or insecure))
    uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, log_level=log_level,
                workers=processes)


def with_bind_host(settings: Settings, host: str) -> Settings:
    """Settings whose allowed hosts include the address the API binds to, when that is one
    specific address (clients then reach it by that name); a wildcard address (0.0.0.0, ::)
    names no host, so LRSEARCH_ALLOWED_HOSTS decides."""
    from service.origin import host_name

    try:
        unspecified = ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        unspecified = not host
    name = f"[{host.strip('[]')}]" if ":" in host else host
    name = host_name(name)
    if unspecified or "*" in settings.allowed_hosts or name in settings.allowed_hosts:
        return settings
    return settings.model_copy(update={"allowed_hosts": [*settings.allowed_hosts, name]})


@click.group("keys", cls=ServerGroup)
def keys() -> None:
    """API keys: create, list, revoke; and each tenant's webhook secret (run on the server,
    against its database)."""


@keys.command("create")
@click.option("--tenant", required=True, help="the tenant the key acts for")
@click.option("--name", help="a label for the key")
def keys_create(tenant: str, name: str | None) -> None:
    """A new API key, printed once."""
    from service.auth import ops as auth

    def create(session: Any) -> str:
        row, key = auth.create(session, tenant, name)
        return f"{key}\n(prefix {row.prefix}, tenant {row.tenant}; shown only once)"

    click.echo(_with_session(create))


@keys.command("list")
def keys_list() -> None:
    """Every key's prefix, tenant and state (never the key)."""
    from service.auth import ops as auth

    for row in _with_session(auth.list_keys):
        state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
        click.echo(f"{row.prefix}  {row.tenant:20} {state:18} {row.name or ''}")


@keys.command("revoke")
@click.argument("prefix")
def keys_revoke(prefix: str) -> None:
    """Revoke the key with this PREFIX (see keys list)."""
    from service.auth import ops as auth

    _with_session(lambda s: auth.revoke(s, prefix))
    click.echo(f"revoked {prefix}")


@keys.command("webhook-secret")
@click.option("--tenant", required=True, help="the tenant whose notifications it signs")
@click.option("--rotate", is_flag=True,
              help="replace the tenant's secret (the old one stops signing at once)")
def keys_webhook_secret(tenant: str, rotate: bool) -> None:
    """The secret that signs a tenant's study-end notifications, printed once: created when
    the tenant has none; an existing one is only replaced with --rotate (it cannot be shown
    again)."""
    from service.notifications import ops as notifications

    def make(session: Any) -> str:
        row = notifications.rotate_secret(session, tenant, replace=rotate)
        return (f"{row.secret}\n(webhook secret of tenant {row.tenant}; shown only once. "
                "Requests carry X-Lrsearch-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "
                "\"<t>.<body>\"> keyed with it)")

    click.echo(_with_session(make))


def visible_gpus() -> list[int]:
    """The GPUs this machine shows, as the device ids a worker's `--gpu` takes, without
    starting any framework: the entries of CUDA_VISIBLE_DEVICES when it is set (none when it
    is empty or -1; positions 0..n-1 when its entries are not numbers, such as UUIDs), else
    the indices `nvidia-smi -L` lists ("GPU 0: ..." lines; none without nvidia-smi). The only
    place GPUs are enumerated."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [d.strip() for d in visible.split(",") if d.strip()]
        entries = entries[:entries.index("-1")] if "-1" in entries else entries  # CUDA's rule
        if all(e.isdigit() for e in entries):
            return [int(e) for e in entries]
        return list(range(len(entries)))
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    found = (re.match(r"GPU (\d+):", line) for line in out.stdout.splitlines())
    return [int(m.group(1)) for m in found if m]


def gpu_count() -> int:
    """How many GPUs this machine shows (`visible_gpus`)."""
    return len(visible_gpus())


@click.command("serve", cls=ServerCommand)
@server_options
@click.option("--workers", type=int, default=None,
              help="worker processes [default: one per GPU, or 1]")
@click.option("--per-gpu", type=int, default=None,
              help="start this many workers on each GPU, sharing it (`lrsearch worker "
                   "--per-gpu`); not with --workers")
@click.option("--backend", default=None,
              help="the workers' Keras backend, tensorflow, jax or torch (`lrsearch worker "
                   "--backend`) [default: KERAS_BACKEND, else tensorflow]")
@click.pass_context
def cmd_serve(ctx: click.Context, host: str, port: int, log_level: str, insecure: bool,
              workers: int | None, per_gpu: int | None, backend: str | None) -> None:
    """One machine: migrate, then the API, workers and a reaper; Ctrl-C stops all."""
    from service.config import Settings

    _require_worker_commands()
    gpus = visible_gpus()
    commands = worker_commands(gpus, workers, per_gpu, backend)
    setup_logging()
    ctx.invoke(cmd_migrate)
    # The workers reap too; the reaper recovers lost leases even when no worker is alive.
    # SIGTERM stops serve as Ctrl-C does: the API shuts down and then the workers are stopped
    # (uvicorn re-raises the signal it caught once it has shut down; by default SIGTERM would
    # then end this process at once, leaving its workers running).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    procs: list[subprocess.Popen[bytes]] = []
    try:  # a signal while they start still stops those already started
        for args in [*commands, ["reaper"]]:
            procs.append(_lrsearch(*args))
        ctx.invoke(cmd_api, host=host, port=port, log_level=log_level, insecure=insecure)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one: the workers' grace holds
        _stop(procs, Settings().grace_seconds + 10)


def worker_commands(gpus: list[int], workers: int | None, per_gpu: int | None,
                    backend: str | None) -> list[list[str]]:
    """The `lrsearch worker` argument lists `serve` starts on a machine with these GPUs:
    `--workers N` spread over the GPUs in turn (default one per GPU, or 1 without GPUs), or
    `--per-gpu N`: N on each GPU, each told it shares its GPU with N-1 others. `--backend`
    is passed on (each worker checks it). Usage errors name the option and its value."""
    if per_gpu is not None:
        if workers is not None:
            raise click.UsageError(f"--per-gpu {per_gpu} and --workers {workers}: give one")
        if per_gpu < 1:
            raise click.UsageError(f"--per-gpu must be at least 1, not {per_gpu}")
        if not gpus:
            raise click.UsageError(f"--per-gpu {per_gpu}: this machine shows no GPU "
                                   "(nvidia-smi -L lists none, or CUDA_VISIBLE_DEVICES is "
                                   "empty); use --workers N")
    elif workers is not None and workers < 1:
        raise click.UsageError(f"--workers must be at least 1, not {workers}")
    keras_backend(backend)  # each worker would refuse it: say so once, before anything starts
    extra = ["--backend", backend] if backend is not None else []
    if per_gpu is not None:
        return [["worker", "--gpu", str(g), "--per-gpu", str(per_gpu), *extra]
                for g in gpus for _ in range(per_gpu)]
    n = workers if workers is not None else max(1, len(gpus))
    return [["worker", *(["--gpu", str(gpus[i % len(gpus)])] if gpus else []), *extra]
            for i in range(n)]


def keras_backend(option: str | None) -> str:
    """The Keras backend a worker trains on: `--backend`, else KERAS_BACKEND, else tensorflow.
    A name Keras does not know, or one whose package (named as the backend) is not installed,
    is a usage error naming where the name came from."""
    name = option if option is not None else os.environ.get("KERAS_BACKEND") or "tensorflow"
    source = "--backend" if option is not None else "KERAS_BACKEND"
    if name not in KERAS_BACKENDS:
        raise click.UsageError(f"{source} {name!r} is not a Keras backend a worker can train "
                               f"on; choose one of {', '.join(KERAS_BACKENDS)}")
    if importlib.util.find_spec(name) is None:
        raise click.UsageError(f"{source} {name!r}: the {name} package is not installed here")
    return name


def _require_worker_commands() -> None:
    """`serve` runs the worker's commands; say so if the worker package is not installed."""
    from lrsearch.cli import cli

    missing = [name for name in WORKER_COMMANDS if name not in cli.commands]
    if missing:
        named = " and ".join(f"`lrsearch {name}`" for name in missing)
        raise SystemExit(f"error: `lrsearch serve` runs {named}, which the `worker` package "
                         "adds, and it is not installed here.")


def _lrsearch(*args: str) -> subprocess.Popen[bytes]:
    """`lrsearch ARGS` as a child process, with this interpreter (in serve's process group, so
    that killing the group stops everything)."""
    return subprocess.Popen([sys.executable, "-m", "lrsearch.cli", *args])


def _stop(procs: list[subprocess.Popen[bytes]], grace_seconds: float) -> None:
    """SIGTERM each process (a worker finishes its job first), SIGKILL what outlives grace."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
