"""The worker's commands, added to the `lrsearch` command line through the `lrsearch.commands`
entry-point group (pyproject.toml):

    lrsearch worker [--gpu N] [--backend tensorflow|jax|torch] [--per-gpu N]
                                       one worker process (run many, on many machines);
                                       --per-gpu N: one of N workers sharing its GPU
    lrsearch reaper                    recover lost leases, reconcile Optuna and send study-end
                                       notifications, running no jobs (`lrsearch serve` runs
                                       one beside its workers)

`python -m worker ARGS` is `lrsearch worker ARGS`. Heavy imports happen inside the commands:
every `lrsearch` invocation loads this module.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from service.cli import KERAS_BACKENDS as BACKENDS
from service.cli import ServerCommand, keras_backend, setup_logging

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from service.config import Settings

log = logging.getLogger("lrsearch.reaper")


@click.command("worker", cls=ServerCommand)
@click.option("--gpu", type=int, default=None, help="pin this worker to one GPU")
@click.option("--backend", default=None, metavar="|".join(BACKENDS),
              help="Keras' backend for training [default: KERAS_BACKEND, else tensorflow]")
@click.option("--per-gpu", type=int, default=1, show_default=True,
              help="workers sharing this worker's GPU: each takes its share of the memory "
                   "(TensorFlow: memory growth; JAX: no preallocation, at most 0.95/N; "
                   "PyTorch: at most 1/N). `lrsearch serve --per-gpu N` starts N per GPU")
@click.option("--max-jobs", type=int, default=None, help="exit after this many jobs")
def cmd_worker(gpu: int | None, backend: str | None, per_gpu: int, max_jobs: int | None
               ) -> None:
    """Run one worker: claims queued trials and range tests and runs them."""
    chosen = keras_backend(backend)
    if per_gpu < 1:
        raise click.BadParameter(f"must be at least 1, not {per_gpu}", param_hint="--per-gpu")
    # The worker's own process and its children agree on the backend: a child is spawned with
    # this environment, and sets it again before it imports Keras (worker/child.py).
    import os

    os.environ["KERAS_BACKEND"] = chosen

    from service.config import Settings
    from worker.loop import Worker

    setup_logging()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: dump stacks
    w = Worker(Settings(), gpu=gpu, backend=chosen, per_gpu=per_gpu)
    w.install_signals()
    w.run(max_jobs=max_jobs)


@click.command("reaper", cls=ServerCommand)
def cmd_reaper() -> None:
    """Recover lost leases, reconcile Optuna and send study-end notifications, running no jobs
    (so that a job whose worker died is queued again even when no worker is alive); SIGTERM or
    SIGINT stops it."""
    from service.config import Settings

    setup_logging()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    reap_until(stop, Settings())


REAPER_NOTIFY_LIMIT = 50  # notification attempts per pass, none begun once a reap is due


def reap_until(stop: threading.Event, settings: Settings) -> None:
    """Every half lease until `stop` is set: requeue expired leases (their Optuna trials
    FAIL) and reconcile Optuna with our tables; and every notify_poll_seconds (or half lease,
    when shorter), send the study-end notifications that are due. A batch of notifications
    begins no attempt once a reap is due, so requeueing waits for one attempt at most
    (notify_timeout_seconds), never for the batch. A failed pass is logged; the next one
    retries."""
    import os
    import socket
    import time

    from sqlalchemy.orm import Session

    from service import migrations
    from service.db import make_engine
    from worker.loop import SchemaGate, notify, reap
    from worker.reconcile import Reconciler
    from worker.search import storage

    engine = make_engine(settings.database_url, immediate=True)
    optuna = storage(settings.optuna_url())
    reconciler = Reconciler(settings.lease_seconds)
    owner = f"reaper:{socket.gethostname()}:{os.getpid()}"
    tick = min(settings.lease_seconds / 2, settings.notify_poll_seconds)
    last_reap = time.monotonic()

    def db(fn: Callable[[Session], Any]) -> Any:
        with Session(engine) as session, session.begin():
            return fn(session)

    # A reaper of another release neither reaps nor notifies (as a worker does not claim).
    schema = SchemaGate("reaper is idle")

    try:
        while not stop.wait(tick):
            try:
                if not schema.admits(db(lambda s: migrations.current(s.connection()))):
                    continue
            except Exception as e:  # the database away: the next pass retries
                log.warning("reaper: %s", e)
                continue
            if time.monotonic() - last_reap >= settings.lease_seconds / 2:
                last_reap = time.monotonic()
                try:
                    reap(settings, db, optuna)
                    reconciler.run(db, optuna)
                except Exception as e:  # the database or Optuna away: the next pass retries
                    log.warning("reaper: %s", e)
            notify(settings, db, owner, REAPER_NOTIFY_LIMIT, stop,
                   until=last_reap + settings.lease_seconds / 2)
    finally:
        engine.dispose()
