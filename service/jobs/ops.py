"""Job claims with leases and fencing, and the reaper that recovers lost claims.

A claim moves one queued job to running, raises its `attempt` (the fencing token) and sets a
lease. Every later write for that job goes through `fenced()`, which locks the job row and
checks that the lease is still this worker's at this attempt: a worker whose lease expired
(and whose job the reaper gave to someone else) can no longer record anything.

PostgreSQL claims with `SELECT ... FOR UPDATE SKIP LOCKED`; SQLite with an immediate
transaction (the worker's engine begins every transaction with BEGIN IMMEDIATE).

Claims take turns across tenants: the next job is the oldest queued job of the tenant whose
latest claim is the oldest (a tenant never claimed goes first), so one tenant's 10,000 queued
trials delay another tenant's first trial by one claim, not by 10,000.

Every lease time is read from the database's clock (`db_now`), never the worker host's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.datasets.models import UploadedDataset
from service.db import db_now
from service.jobs.models import Job
from service.range_tests.models import RangeTest
from service.studies import progress, roles
from service.studies.models import Study, Trial

log = logging.getLogger("lrsearch.jobs")


class LeaseLost(Exception):
    """This worker no longer holds the job (expired lease, reaped, or cancelled study)."""


@dataclass(frozen=True)
class Claim:
    job_id: int
    kind: str
    attempt: int
    owner: str
    study_id: str | None
    slot: int | None
    range_test_id: str | None
    dataset_id: int | None = None


def _tenant_turns(session: Session) -> list[str]:
    """Tenants with queued jobs, the one whose latest claim is oldest first (never claimed
    before all others). One row per tenant: cheap however many jobs are queued."""
    queued = select(Job.tenant).where(Job.state == "queued").distinct().subquery()
    last = (select(func.max(Job.claimed_at)).where(Job.tenant == queued.c.tenant)
            .scalar_subquery())
    rows = session.execute(select(queued.c.tenant, last.label("last"))).all()
    return [t for t, _ in sorted(rows, key=lambda r: (r[1] is not None, r[1] or 0, r[0]))]


def claim(session: Session, owner: str, lease_seconds: float) -> Claim | None:
    """Take the oldest queued job of the tenant whose turn it is, or None; a dataset
    registration first, since the tenant's studies on that dataset wait for it. The caller
    commits."""
    postgres = session.get_bind().dialect.name == "postgresql"
    for tenant in _tenant_turns(session):
        queued = select(Job).where(Job.state == "queued", Job.tenant == tenant)
        # The tenant's pending datasets (a few rows of a small table), then their jobs by the
        # index on jobs.dataset_id: never a scan of the tenant's queued trials.
        pending = session.scalars(select(UploadedDataset.id).where(
            UploadedDataset.tenant == tenant, UploadedDataset.status == "pending")).all()
        queries = [queued.where(Job.dataset_id.in_(pending))] if pending else []
        job = None
        for query in (*queries, queued):
            query = query.order_by(Job.created_at, Job.id).limit(1)
            if postgres:  # another worker may hold this tenant's oldest: take the next one
                query = query.with_for_update(skip_locked=True)
            job = session.scalar(query)
            if job is not None:
                break
        if job is None:
            continue
        now = db_now(session)
        job.state, job.attempt, job.lease_owner = "running", job.attempt + 1, owner
        job.claimed_at, job.lease_expires_at = now, now + timedelta(seconds=lease_seconds)
        session.flush()
        return Claim(job.id, job.kind, job.attempt, owner, job.study_id, job.slot,
                     job.range_test_id, job.dataset_id)
    return None


def fenced(session: Session, c: Claim, lease_seconds: float | None = None) -> Job:
    """Lock the job row and check the claim still holds; extend the lease when asked."""
    query = select(Job).where(Job.id == c.job_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    job = session.scalar(query)
    now = db_now(session)
    if job is None or job.state != "running" or job.attempt != c.attempt \
            or job.lease_owner != c.owner or (job.lease_expires_at or now) < now:
        raise LeaseLost(f"job {c.job_id} attempt {c.attempt} is no longer held by {c.owner}")
    if lease_seconds is not None:
        job.lease_expires_at = now + timedelta(seconds=lease_seconds)
    return job


def heartbeat(session: Session, c: Claim, lease_seconds: float) -> bool | None:
    """Extend the lease. None when it is no longer ours; otherwise whether the job's
    cancellation was requested (False once this claim itself finished the job: a beat that
    races the final write is not a lost lease)."""
    now = db_now(session)
    row = session.execute(
        update(Job).where(Job.id == c.job_id, Job.attempt == c.attempt,
                          Job.lease_owner == c.owner, Job.state == "running",
                          Job.lease_expires_at >= now)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .returning(Job.cancel_requested)).first()
    if row is not None:
        return bool(row[0])
    job = session.get(Job, c.job_id)
    finished_by_us = job is not None and job.attempt == c.attempt \
        and job.lease_owner == c.owner and job.state not in ("queued", "running")
    return False if finished_by_us else None


def release(session: Session, c: Claim) -> None:
    """Give the job back to the queue without counting a failure (graceful shutdown)."""
    job = fenced(session, c)
    _unstart(session, job)
    job.state, job.lease_owner, job.lease_expires_at = "queued", None, None
    session.flush()


def finish(session: Session, c: Claim, state: str, error: str | None = None) -> None:
    """Mark the job done, failed or cancelled (fenced)."""
    job = fenced(session, c)
    job.state, job.last_error, job.lease_expires_at = state, error, None
    session.flush()


def retry_or_fail(session: Session, job: Job, reason: str, max_attempts: int) -> bool:
    """A retryable failure (lost worker, child crash, timeout): back to the queue, or failed
    after max_attempts. Returns True when the job was requeued."""
    job.failures += 1
    job.last_error = reason
    job.lease_owner, job.lease_expires_at = None, None
    if job.failures < max_attempts and not job.cancel_requested:
        _unstart(session, job, reason)
        job.state = "queued"
        session.flush()
        return True
    job.state = "cancelled" if job.cancel_requested else "failed"
    _fail_started(session, job, f"{reason} (attempt {job.failures} of {max_attempts})",
                  job.state)
    session.flush()
    return False


def _slot_trial(session: Session, job: Job) -> tuple[Study, Trial | None]:
    study = progress.locked(session, job.study_id)
    trial = session.scalar(select(Trial).where(Trial.study_id == job.study_id,
                                               Trial.slot == job.slot))
    return study, trial


def _unstart(session: Session, job: Job, reason: str | None = None) -> None:
    """A slot goes back to the queue: if its trial had started, count it as queued again."""
    if job.kind == "dataset":
        return  # the dataset stays pending
    if job.kind != "trial":
        if job.range_test_id is not None:
            test = session.get(RangeTest, job.range_test_id)
            if test is not None and test.status == "running":
                test.status = "queued"
        return
    study, trial = _slot_trial(session, job)
    if trial is not None and trial.state == "running":
        progress.requeue_trial(session, study, trial, reason)


def _fail_started(session: Session, job: Job, reason: str, state: str) -> None:
    if job.kind == "dataset":
        from service.datasets import registration  # it imports the studies: import late

        row = session.get(UploadedDataset, job.dataset_id) if job.dataset_id else None
        if row is not None and row.status == "pending":
            # Only the row: the work waiting for it is settled by the reaper's sweep, which
            # takes the creation locks before any job row (this transaction holds job rows).
            registration.mark_failed(row, f"registration failed: {reason}")
        return
    if job.kind != "trial":
        test = session.get(RangeTest, job.range_test_id) if job.range_test_id else None
        if test is not None and test.status in ("queued", "running"):
            test.status, test.error, test.finished_at = state, reason, db_now(session)
        return
    study, trial = _slot_trial(session, job)
    if trial is not None and trial.state == "running":
        progress.finish_trial(session, study, trial, "failed" if state == "failed"
                              else "cancelled", None, reason)
    elif trial is None or trial.state == "queued":
        progress.fail_unstarted_slot(session, study, job.slot or 0, reason, state)


def reap(session: Session, max_attempts: int) -> list[tuple[str, int]]:
    """Return expired leases to the queue (or fail them after max_attempts). Returns the
    (optuna study name, trial number) of every lost attempt, to be marked FAIL in Optuna."""
    query = select(Job).where(Job.state == "running", Job.lease_expires_at < db_now(session))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    lost: list[tuple[str, int]] = []
    for job in session.scalars(query).all():
        if job.kind == "trial":
            study, trial = _slot_trial(session, job)
            if trial is not None and trial.state == "running" and trial.number is not None:
                lost.append((roles.optuna_name(study, trial.slot), trial.number))
        log.warning("job %s attempt %s lost its lease (owner %s)", job.id, job.attempt,
                    job.lease_owner)
        retry_or_fail(session, job, f"lost worker: lease of {job.lease_owner} expired",
                      max_attempts)
    return lost
