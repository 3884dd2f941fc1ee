"""
Service commands (service/cli.py adds them; it is the installed entry point):

    lrsearch migrate                   upgrade our schema and set up Optuna's storage
    lrsearch api --host --port         the HTTP API (uvicorn)
    lrsearch worker [--gpu N]          one worker process (run many, on many machines)
    lrsearch keys create --tenant T    a new API key (printed once); keys list; keys revoke P
    lrsearch serve --host --port --workers N
                                       the one-machine default: migrate, then the API, N
                                       workers (one per GPU where there are GPUs) and a
                                       reaper; SQLite under ./.lrsearch/ unless
                                       LRSEARCH_DATABASE_URL says otherwise; Ctrl-C stops all
"""

from __future__ import annotations

import argparse
import faulthandler
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
import time
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


def cmd_api(args: argparse.Namespace) -> None:
    import uvicorn

    from service.auth import ops as auth
    from service.main import create_app

    loopback = is_loopback(args.host)
    if not loopback and not args.insecure and not _with_session(auth.any_active):
        raise SystemExit(
            f"error: refusing to serve on {args.host} without API keys: anyone who can reach "
            "it could submit work and read results. Create a key with `lrsearch keys create "
            "--tenant NAME`, bind to 127.0.0.1, or pass --insecure to accept anonymous "
            "requests anyway.")
    app = create_app(anonymous=loopback or args.insecure)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


def cmd_keys(args: argparse.Namespace) -> None:
    from service.auth import ops as auth

    if args.action == "create":
        if not args.tenant:
            raise SystemExit("error: keys create needs --tenant NAME")

        def create(session: Any) -> str:
            row, key = auth.create(session, args.tenant, args.name)
            return f"{key}\n(prefix {row.prefix}, tenant {row.tenant}; shown only once)"

        print(_with_session(create))
    elif args.action == "list":
        for row in _with_session(auth.list_keys):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            print(f"{row.prefix}  {row.tenant:20} {state:18} {row.name or ''}")
    else:
        if not args.prefix:
            raise SystemExit("error: keys revoke needs the key's PREFIX")
        _with_session(lambda s: auth.revoke(s, args.prefix))
        print(f"revoked {args.prefix}")


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s "
                        "[%(process)d] %(message)s")


def cmd_worker(args: argparse.Namespace) -> None:
    from service.config import Settings
    from worker.loop import Worker

    _logging()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: dump stacks
    w = Worker(Settings(), gpu=args.gpu)
    w.install_signals()
    w.run(max_jobs=args.max_jobs)


def gpu_count() -> int:
    """GPUs visible to this machine, without starting TensorFlow (0 without nvidia-smi)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return len([line for line in out.stdout.splitlines() if line.startswith("GPU ")])


def _reaper(stop: threading.Event) -> None:
    """Recover lost leases even when no worker is alive (serve's own reaper)."""
    from sqlalchemy.orm import Session

    from service.config import Settings
    from service.db import make_engine
    from worker.loop import reap
    from worker.search import storage

    settings = Settings()
    engine = make_engine(settings.database_url, immediate=True)
    optuna = storage(settings.optuna_url())

    def db(fn: Any) -> Any:
        with Session(engine) as session, session.begin():
            return fn(session)

    while not stop.wait(settings.lease_seconds / 2):
        try:
            reap(settings, db, optuna)
        except Exception as e:  # the next pass tries again
            logging.getLogger("lrsearch.serve").warning("reaper: %s", e)
    engine.dispose()


def cmd_serve(args: argparse.Namespace) -> None:
    _logging()
    cmd_migrate(args)
    gpus = gpu_count()
    n = args.workers if args.workers is not None else max(1, gpus)
    procs = []
    for i in range(n):
        cmd = [sys.executable, "-m", "worker"]
        if gpus:
            cmd += ["--gpu", str(i % gpus)]
        procs.append(subprocess.Popen(cmd))
    stop = threading.Event()
    reaper = threading.Thread(target=_reaper, args=(stop,), daemon=True)
    reaper.start()
    try:
        cmd_api(args)
    finally:
        stop.set()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        from service.config import Settings

        deadline = time.monotonic() + Settings().grace_seconds + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()


def add_commands(sub: Any) -> None:
    p = sub.add_parser("migrate", help="upgrade the database schema (ours and Optuna's)")
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("keys", help="API keys: create --tenant NAME, list, revoke PREFIX")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("prefix", nargs="?", help="revoke: the key's prefix (see keys list)")
    p.add_argument("--tenant", help="create: the tenant the key acts for")
    p.add_argument("--name", help="create: a label for the key")
    p.set_defaults(func=cmd_keys)
    p = sub.add_parser("worker", help="run one worker (claims and runs queued jobs)")
    p.add_argument("--gpu", type=int, default=None, help="pin this worker to one GPU")
    p.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    p.set_defaults(func=cmd_worker)
    for name, func, text in (("api", cmd_api, "run the HTTP API"),
                             ("serve", cmd_serve, "migrate, then the API, workers and a "
                              "reaper (one machine)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--log-level", default="info")
        p.add_argument("--insecure", action="store_true",
                       help="on a non-loopback address, accept requests without API keys")
        if name == "serve":
            p.add_argument("--workers", type=int, default=None,
                           help="worker processes (default: one per GPU, or 1)")
        p.set_defaults(func=func)


def main(argv: Sequence[str] | None = None) -> int:
    from service.errors import APIError

    try:
        return library_cli.main(argv, extend=add_commands, extra_help=__doc__ or "")
    except APIError as e:
        print(f"error: {e.detail}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
