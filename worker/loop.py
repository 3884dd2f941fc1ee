"""The worker: claim -> run in the child -> record, until told to stop.

Signals: the first SIGTERM or SIGINT lets the running job finish within `grace_seconds`, then
stops the child and releases the lease (the job goes back to the queue, no failure counted);
a trial with checkpoints (lrsearch.checkpoints) is not run to its end but handed on at its
next epoch's end, once that epoch is recorded and its checkpoint written, and the next worker
resumes it from there. A second signal stops at once, releasing the lease the same way (a
trial then resumes from its last checkpoint). Every worker also reaps
expired leases of any study, and sends due study-end notifications, when idle (no job queued).

Schema: a worker claims, reaps and notifies only while the database's Alembic revision is
its own code's head, checked at start and in every claim's transaction. During a rolling upgrade
the old workers stop claiming as soon as the new release's `lrsearch migrate` commits, and
new workers wait until it has run. A worker that finds another revision keeps running: it
checks again every poll interval, says why it waits (when it starts waiting, when the
revision it finds changes, and every SCHEMA_LOG_SECONDS meanwhile) and starts claiming as
soon as the revisions match, so no restart is needed once the database is migrated.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from lrsearch import checkpoints, plugins
from service import migrations
from service.config import Settings
from service.datasets import registration
from service.db import make_engine
from service.jobs import ops as jobs
from service.jobs.models import Job
from service.jobs.ops import Claim, LeaseLost
from service.notifications import delivery
from service.studies.models import FINISHED, Study
from worker import reconcile, search
from worker.errors import Cancelled, Released, Retryable
from worker.executor import ChildDied, Executor
from worker.lease import Heartbeat, Presence
from worker.tasks import TASKS

log = logging.getLogger("lrsearch.worker")
T = TypeVar("T")
DB_RETRY_SECONDS = 60.0
DESCRIBE_TAG = (0, 0)  # no job has id 0: the startup "what can you load" task
# Notification attempts per idle pass (each ends within notify_timeout_seconds): a job
# submitted meanwhile waits at most this many attempts. The reaper makes more.
WORKER_NOTIFY_LIMIT = 2
SCHEMA_LOG_SECONDS = 60.0  # while the schema is not ours, the reason is logged this often
# A worker's database connections (pool size, overflow) per engine, fixed: its loop runs on one
# thread, one transaction at a time (a second pooled connection, and one overflow, should a
# call nest); the heartbeat and presence threads hold one each. With Optuna's storage
# (search.OPTUNA_POOL_SIZE + OPTUNA_MAX_OVERFLOW), at most WORKER_CONNECTIONS per worker, all
# named APPLICATION_NAME on PostgreSQL (the README's connection budget).
WORKER_POOL = (2, 1)
HEARTBEAT_POOL = (2, 0)
WORKER_CONNECTIONS = sum(WORKER_POOL) + sum(HEARTBEAT_POOL) + search.OPTUNA_POOL_SIZE \
    + search.OPTUNA_MAX_OVERFLOW
APPLICATION_NAME = "lrsearch-worker"


__all__ = ["Cancelled", "Released", "Retryable", "SchemaGate", "Worker", "notify", "reap"]


class SchemaNotOurs(Exception):
    """Raised in a claim's transaction to roll it back: the database's schema revision is not
    this code's (the reason is logged by the worker's SchemaGate)."""


class SchemaGate:
    """Whether the database's schema revision, as last read, is this code's head (read from
    its migration scripts once); what a worker checks before claiming and the reaper before
    reaping. Each `admits(found)` records the answer; the reason for waiting is logged as
    `waiting: <reason><suffix>` when waiting starts, when the revision found changes, and
    every SCHEMA_LOG_SECONDS meanwhile (not at every poll), and `resumed` (if given, with the
    revision) once the revisions match again."""

    def __init__(self, waiting: str, suffix: str = "", resumed: str | None = None) -> None:
        self.expected = migrations.head()
        self.waiting, self.suffix, self.resumed = waiting, suffix, resumed
        self.ok = False
        self._found: str | None = None
        self._logged = -float("inf")

    def admits(self, found: str | None) -> bool:
        problem = migrations.mismatch(found, self.expected)
        if problem is None:
            if not self.ok and self.resumed is not None:
                log.info(self.resumed, found)
            self.ok = True
            return True
        now = time.monotonic()
        if self.ok or found != self._found or now - self._logged >= SCHEMA_LOG_SECONDS:
            log.warning("%s: %s%s", self.waiting, problem, self.suffix)
            self._logged = now
        self.ok, self._found = False, found
        return False


class Worker:
    def __init__(self, settings: Settings, *, gpu: int | None = None, name: str | None = None,
                 backend: str = "tensorflow", per_gpu: int = 1) -> None:
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # A stalled worker (SIGSTOP, a frozen VM) must not hold row locks for ever: PostgreSQL
        # ends its open transaction once it idles longer than a lease.
        idle = settings.lease_seconds
        # The loop and its jobs run on this thread, one transaction at a time (WORKER_POOL).
        self.engine = make_engine(settings.database_url, immediate=True, idle_timeout=idle,
                                  pool_size=WORKER_POOL[0], max_overflow=WORKER_POOL[1],
                                  application_name=APPLICATION_NAME)
        # One connection for the lease heartbeat, one for the presence row.
        self.heartbeat_engine = make_engine(settings.database_url, pool_size=HEARTBEAT_POOL[0],
                                            max_overflow=HEARTBEAT_POOL[1], idle_timeout=idle,
                                            application_name=APPLICATION_NAME)
        self.optuna = search.storage(settings.optuna_url(), APPLICATION_NAME)
        self.gpu = gpu
        self.plugins = plugins.modules(settings.plugins)
        self.backend, self.per_gpu = backend, per_gpu  # Keras' backend; workers on the GPU
        self.executor = Executor(gpu, settings.trials_per_child, self.plugins, backend, per_gpu)
        self.stop_requested = threading.Event()
        self.hard_stop = threading.Event()
        self.grace_deadline = float("inf")
        self.crash_slots = _slots(settings.fault_crash_slots)
        self.exit_before_tell_slots = _slots(settings.fault_exit_before_tell_slots)
        self.reconciler = reconcile.Reconciler(settings.lease_seconds)
        self._last_reap = 0.0
        self._last_notify = 0.0
        # Each claim compares the database's revision with this code's.
        self.schema = SchemaGate(
            f"worker {self.name} is not claiming jobs",
            f" (checking again every {settings.poll_seconds}s)",
            f"worker {self.name}: database schema at revision %s, this code's: claiming jobs")

    # -- signals -------------------------------------------------------------------------
    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_requested.is_set():
            log.warning("second signal: stopping now")
            self.hard_stop.set()
            return
        log.warning("signal %s: finishing the running job (up to %ss), then stopping",
                    signum, self.settings.grace_seconds)
        self.grace_deadline = time.monotonic() + self.settings.grace_seconds
        self.stop_requested.set()

    # -- database ------------------------------------------------------------------------
    def db(self, fn: Callable[[Session], T]) -> T:
        """Run fn in one transaction; retry it while the database is unreachable (a dropped
        or terminated connection), so a restart or a killed backend does not lose the job."""
        deadline = time.monotonic() + DB_RETRY_SECONDS
        while True:
            try:
                with Session(self.engine) as session, session.begin():
                    return fn(session)
            except DBAPIError as e:
                if not (e.connection_invalidated or _is_disconnect(e)) \
                        or time.monotonic() > deadline:
                    raise
                log.warning("database unreachable (%s); retrying", type(e.orig).__name__)
                time.sleep(0.5)

    # -- main loop -----------------------------------------------------------------------
    def run(self, max_jobs: int | None = None) -> None:
        log.info("worker %s started", self.name)
        done = 0
        try:
            self.check_schema()  # says at once when the database is not this code's
            capabilities = self.describe()
            with Presence(self.heartbeat_engine, self.name, self.gpu,
                          self.settings.heartbeat_seconds, capabilities):
                while not self.stop_requested.is_set() and (max_jobs is None
                                                            or done < max_jobs):
                    if not self.schema_ok and not self.check_schema():
                        self.stop_requested.wait(self.settings.poll_seconds)
                        continue
                    self.maybe_reap()
                    self.maybe_notify()
                    claim = self._claim_next()
                    if claim is None:
                        self.stop_requested.wait(self.settings.poll_seconds)
                        continue
                    self.execute(claim)
                    done += 1
        finally:
            self.executor.stop()
            self.engine.dispose()
            self.heartbeat_engine.dispose()
            log.info("worker %s stopped", self.name)

    # -- schema ------------------------------------------------------------------------
    def check_schema(self) -> bool:
        """Whether the database's schema is this code's, read so that a database never
        migrated answers "no" rather than failing (`migrations.current`); logs why not."""
        return self.schema.admits(self.db(lambda s: migrations.current(s.connection())))

    def _claim(self, session: Session) -> Claim | None:
        """The next job, or None: none is queued, or the schema is no longer this code's.
        The revision is read in the claim's own transaction, before the claim (so that the
        claim's statements never run against another release's tables) and again after it:
        on PostgreSQL a claim that waited on a migration's lock sees the migrated tables, and
        only a statement after it sees the new revision; a mismatch then rolls the claim
        back (SchemaNotOurs). A version table that is gone counts as a mismatch."""
        if not self.schema.admits(self._revision(session)):
            return None
        claim = jobs.claim(session, self.name, self.settings.lease_seconds)
        if claim is not None and not self.schema.admits(self._revision(session)):
            raise SchemaNotOurs  # rolls back the claim: the job stays queued
        return claim

    def _claim_next(self) -> Claim | None:
        try:
            return self.db(self._claim)
        except SchemaNotOurs:
            return None

    def _revision(self, session: Session) -> str | None:
        try:
            return migrations.revision(session.connection())
        except DBAPIError as e:
            if e.connection_invalidated or _is_disconnect(e):
                raise  # db() retries while the database is away
            # no version table (a database reset under a running worker): `current` says so
            # in a fresh transaction; this one is rolled back
            self.schema.ok = False
            raise SchemaNotOurs from e

    @property
    def stopping(self) -> bool:
        """A first signal arrived: the running trial hands itself on at its next epoch."""
        return self.stop_requested.is_set()

    @property
    def schema_ok(self) -> bool:
        """Whether the revision last read was this code's."""
        return self.schema.ok

    def describe(self, timeout: float = 600.0) -> dict[str, Any]:
        """What this worker can load (its child imports the plugins): published in the
        workers table for the API. A plugin that cannot be imported stops the worker."""
        self.executor.submit(DESCRIBE_TAG, {"kind": "describe"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.hard_stop.is_set():
            message = self.executor.receive(0.5)
            if message is None:
                continue
            kind, payload = message
            if kind != "done":
                raise SystemExit(f"error: the worker's plugins {self.plugins} could not be "
                                 f"loaded: {payload.get('message')}")
            if payload.get("backend") != self.backend:  # Keras imported before KERAS_BACKEND
                raise SystemExit(f"error: --backend {self.backend}: the worker's child runs "
                                 f"Keras on {payload.get('backend')!r}")
            log.info("worker %s can load: %s custom objects, builders %s", self.name,
                     len(payload["custom_objects"]),
                     [b["name"] for b in payload["builders"]] or "none")
            return dict(payload)
        self.executor.kill()
        raise SystemExit("error: the worker's child did not start in time")

    def maybe_reap(self) -> None:
        if time.monotonic() - self._last_reap < self.settings.lease_seconds / 2:
            return
        self._last_reap = time.monotonic()
        reap(self.settings, self.db, self.optuna)
        try:
            self.reconciler.run(self.db, self.optuna)
        except Exception as e:  # Optuna or the database away: the next pass tries again
            log.warning("could not reconcile Optuna with the job table: %s", e)

    def maybe_notify(self) -> None:
        """When idle, every notify_poll_seconds: send up to WORKER_NOTIFY_LIMIT due study-end
        notifications, so they go out where no reaper runs. Idle means no job is queued (the
        claim that follows would find none): while one is, training comes first and the
        notifications wait for the reaper or an idle worker. A job queued while this sends
        waits for at most WORKER_NOTIFY_LIMIT attempts, each over within
        notify_timeout_seconds."""
        if time.monotonic() - self._last_notify < self.settings.notify_poll_seconds:
            return
        self._last_notify = time.monotonic()  # also while busy: one look per poll interval
        try:
            waiting = self.db(lambda s: s.scalar(
                select(Job.id).where(Job.state == "queued").limit(1)) is not None)
        except Exception as e:  # the database away: the claim that follows says so too
            log.warning("could not look for queued jobs: %s", e)
            return
        if waiting:
            return
        notify(self.settings, self.db, self.name, WORKER_NOTIFY_LIMIT, self.stop_requested)

    def execute(self, claim: Claim) -> None:
        log.info("claimed job %s (%s, study %s slot %s, range test %s), attempt %s",
                 claim.job_id, claim.kind, claim.study_id, claim.slot, claim.range_test_id,
                 claim.attempt)
        with Heartbeat(self.heartbeat_engine, claim, self.settings.lease_seconds,
                       self.settings.heartbeat_seconds) as beat:
            try:
                TASKS.get(claim.kind)(self, claim, beat)  # an unknown kind fails like a bug
            except LeaseLost as e:
                self.executor.kill()  # never train on for a job that is not ours
                log.warning("%s; another worker takes it over", e)
            except Exception as e:  # a bug or an outage: the job is retried, the worker lives
                log.exception("job %s failed in the worker", claim.job_id)
                self.executor.kill()
                reason = f"worker error: {type(e).__name__}: {e}"[:1000]
                try:
                    self.db(lambda s: jobs.retry_or_fail(s, jobs.fenced(s, claim), reason,
                                                         self.settings.max_attempts))
                except Exception:
                    log.exception("could not record the failure; the reaper will")

    def supervise(self, claim: Claim, beat: Heartbeat, task: dict[str, Any],
                  on_message: Callable[[str, dict[str, Any]], str | None],
                  stop_on_cancel: bool = False) -> tuple[str, dict[str, Any]]:
        """Run a task in the child; `on_message` handles "started" and "epoch" messages
        (returning the reply to an epoch). Returns the final message.

        Whatever way this gives the job up (lease lost here or in `on_message`, shutdown,
        timeout, cancellation, any exception), the child is killed first: a child never
        outlives the job it was given unless it reported that job finished."""
        deadline = time.monotonic() + self.settings.trial_timeout_seconds
        self.executor.submit((claim.job_id, claim.attempt), task)
        try:
            while True:
                self._check(claim, beat, deadline, stop_on_cancel)
                try:
                    message = self.executor.receive(0.25)
                except ChildDied as e:
                    raise Retryable(str(e)) from None
                if message is None:
                    continue
                kind, payload = message
                if kind not in ("started", "epoch"):
                    return kind, payload
                reply = on_message(kind, payload)
                if reply is not None:
                    self.executor.reply(reply)
        finally:
            if self.executor.busy:
                log.warning("job %s attempt %s given up: stopping its child", claim.job_id,
                            claim.attempt)
                self.executor.kill()

    def _check(self, claim: Claim, beat: Heartbeat, deadline: float, stop_on_cancel: bool
               ) -> None:
        """Raise why the running job must be given up now, if it must."""
        if beat.lost.is_set():
            raise LeaseLost(f"job {claim.job_id} attempt {claim.attempt}: lease lost")
        if self.hard_stop.is_set() or time.monotonic() > self.grace_deadline:
            raise Released("the worker is stopping")
        if time.monotonic() > deadline:
            raise Retryable(f"timeout after {self.settings.trial_timeout_seconds:.0f} s")
        if stop_on_cancel and beat.cancel_requested.is_set():
            raise Cancelled("cancelled by its owner")


def _slots(text: str) -> set[int]:
    return {int(s) for s in text.split(",") if s.strip()}


def _is_disconnect(e: DBAPIError) -> bool:
    text = str(e.orig).lower()
    return any(w in text for w in ("terminat", "closed", "connection", "server", "locked"))


def notify(settings: Settings, db: Callable[[Callable[[Session], Any]], Any], owner: str,
           limit: int, stop: threading.Event | None = None, until: float | None = None
           ) -> int:
    """Send up to `limit` due study-end notifications (service/notifications/delivery.py),
    starting none once `stop` is set or time.monotonic() has passed `until`; returns how many
    attempts were made. A failure is logged: the next pass retries."""
    try:
        return delivery.sweep(db, settings, owner, limit, stop=stop, until=until)
    except Exception as e:  # the database away: the deliveries wait in their table
        log.warning("could not send notifications: %s", e)
        return 0


def reap(settings: Settings, db: Callable[[Callable[[Session], Any]], Any],
         optuna: Any) -> int:
    """Recover expired leases of every study; mark the lost attempts FAIL in Optuna."""
    lost = db(lambda s: jobs.reap(s, settings.max_attempts))
    # Work waiting for a dataset whose registration ended without settling it (a reaped
    # registration job is only marked failed: its row locks were taken before the creation
    # locks that settling needs).
    try:
        db(lambda s: registration.sweep(s, settings))
    except Exception as e:  # never the reaper's end: the next pass tries again
        log.warning("could not settle work waiting for datasets: %s", e)
    for study_name, number in lost:
        try:
            search.fail(optuna, study_name, number, "lost worker: lease expired")
        except Exception as e:  # the reconciler (reconcile.py) repairs it at a later pass
            log.warning("could not mark trial %s of %s FAIL: %s", number, study_name, e)
    sweep_checkpoints(settings, db)
    return len(lost)


def sweep_checkpoints(settings: Settings, db: Callable[[Callable[[Session], Any]], Any]
                      ) -> list[str]:
    """Delete the checkpoints nothing will resume: those of studies that ended or were deleted,
    and in running studies those of slots whose job has ended (a last attempt lost with its
    worker, a queued slot cancelled by a budget) -- a worker deletes its own trial's when the
    trial ends. Returns the study ids whose folders were removed whole. The folders are listed
    before the database is read (checkpoints.sweep), so work created meanwhile is never among
    those swept; a job's ended state is final."""
    root = settings.checkpoint_root
    if root is None:
        return []
    kept: set[str] = set()

    def active() -> set[str]:
        kept.update(db(lambda s: s.scalars(select(Study.id).where(
            Study.status.not_in(FINISHED))).all()))
        return kept

    try:
        removed = checkpoints.sweep(root, active)
        listed = {(sid, slot) for sid in kept for slot in checkpoints.slots(root, sid)}
        if listed:
            ended = {(sid, slot) for sid, slot in db(lambda s: s.execute(
                select(Job.study_id, Job.slot).where(
                    Job.study_id.in_({sid for sid, _ in listed}),
                    Job.state.in_(("done", "failed", "cancelled")))).all())}
            for sid, slot in listed & ended:
                checkpoints.remove(checkpoints.trial_dir(root, sid, slot))
    except Exception as e:  # the database away: the next pass sweeps
        log.warning("could not sweep the checkpoints of ended work: %s", e)
        return []
    if removed:
        log.info("removed the checkpoints of %s ended or deleted studies", len(removed))
    return removed
