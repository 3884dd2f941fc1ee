"""Range-test use cases."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

from sqlalchemy import ColumnElement, and_, case, false, func, select, update
from sqlalchemy.orm import Session, defer

from lrsearch.range_test import SweepSettings
from lrsearch.spec import Objective
from service.config import Settings
from service.db import utcnow
from service.errors import Conflict, NotFound
from service.jobs.models import Job
from service.range_tests.models import RangeTest
from service.range_tests.schemas import RangeTestCreate, RangeTestSummary
from service.requests import (
    insert_once,
    lock_tenant,
    replay,
    request_hash,
    require_at_most,
    require_room,
)
from service.runs import recheck, run_spec

FINISHED = ("succeeded", "failed", "cancelled")
SUMMARY = ("suggestions", "family_bounds")  # the parts of `result` a list shows


def validate(session: Session, settings: Settings, tenant: str, req: RangeTestCreate
             ) -> dict[str, Any]:
    """Every check before anything is stored; returns what the worker runs: the RunSpec, the
    sweep, repeats and validation."""
    require_at_most(("num_iter", req.num_iter, settings.max_num_iter),
                    ("repeats", req.repeats, settings.max_repeats),
                    ("batch_size", req.batch_size, settings.max_batch_size))
    sweep = SweepSettings(req.min_lr, req.max_lr, req.num_iter, req.mode,
                          req.diverge_threshold)
    # A range test follows the training loss; its objective is not used.
    run = run_spec(session, settings, tenant, req, dataset=req.dataset,
                   batch_size=req.batch_size, seed=req.seed, goal=Objective.of("loss", None))
    return {"run": run.stored(), "sweep": asdict(sweep), "repeats": req.repeats,
            "validation": req.validation}


def create(session: Session, settings: Settings, tenant: str, req: RangeTestCreate,
           idempotency_key: str | None) -> RangeTest:
    """Validate, then store the range test and its job. Safe under concurrency, as studies':
    the active limit holds the tenant's lock, and racing retries of one Idempotency-Key all
    get the one range test that was stored."""
    raw = req.model_dump(mode="json")
    digest = request_hash(raw)
    found = replay(session, RangeTest, tenant, idempotency_key, digest)
    if found is not None:
        return found
    spec = validate(session, settings, tenant, req)
    lock_tenant(session, "range_test", tenant)
    found = replay(session, RangeTest, tenant, idempotency_key, digest)  # committed meanwhile?
    if found is not None:
        return found
    # The dataset and model not deleted meanwhile; on a dataset still being registered the
    # job waits (the registration's end queues it or fails the test).
    spec, waiting = recheck(session, settings, tenant, spec)
    require_room(session, RangeTest, tenant, settings.max_active_range_tests,
                 "LRSEARCH_MAX_ACTIVE_RANGE_TESTS", "range tests")
    test = RangeTest(id=uuid.uuid4().hex, tenant=tenant, status="queued",
                     request=raw, spec=spec,
                     idempotency_key=idempotency_key, request_hash=digest)

    def add_job(test: RangeTest) -> None:
        session.add(Job(kind="range_test", tenant=tenant, range_test_id=test.id,
                        state="waiting" if waiting else "queued"))

    return insert_once(session, RangeTest, tenant, idempotency_key, digest, test, add_job)


def get(session: Session, tenant: str, test_id: str) -> RangeTest:
    test = session.get(RangeTest, test_id)
    if test is None or test.tenant != tenant:
        raise NotFound(f"Unknown range test `{test_id}`.", field="range_test_id")
    return test


def list_tests(session: Session, tenant: str, offset: int, limit: int
               ) -> tuple[list[RangeTestSummary], int]:
    """One page, newest first, without the sweeps: the result column (megabytes per test with
    long or repeated sweeps) is not read; the database extracts the suggestions and bounds."""
    where = RangeTest.tenant == tenant
    total = session.scalar(select(func.count()).select_from(RangeTest).where(where)) or 0
    unreadable: ColumnElement[Any]
    parts: list[ColumnElement[Any]]
    if session.get_bind().dialect.name == "sqlite":
        # SQLite's JSON functions refuse the NaN a diverged sweep may leave in the stored text:
        # those rows are flagged and read whole below, instead of failing the page.
        valid = func.json_valid(RangeTest.result) == 1
        unreadable = and_(RangeTest.result.is_not(None), ~valid)
        parts = [case((valid, RangeTest.result[key]), else_=None) for key in SUMMARY]
    else:
        unreadable, parts = false(), [RangeTest.result[key] for key in SUMMARY]
    rows = session.execute(select(RangeTest, unreadable, *parts)
                           .options(defer(RangeTest.result)).where(where)
                           .order_by(RangeTest.created_at.desc()).offset(offset).limit(limit)
                           ).all()
    out = []
    for test, whole, *values in rows:
        found = dict(zip(SUMMARY, values, strict=True))
        if whole:
            found = {key: (test.result or {}).get(key) for key in SUMMARY}
        out.append(RangeTestSummary.summary(test, **found))
    return out, total


def _locked(session: Session, test_id: str) -> RangeTest:
    """The range-test row, locked for this transaction (FOR UPDATE on PostgreSQL; SQLite
    already serialises writers) and read fresh."""
    test = session.get(RangeTest, test_id, with_for_update=True, populate_existing=True)
    if test is None:
        raise NotFound(f"Unknown range test `{test_id}`.", field="range_test_id")
    return test


def cancel(session: Session, test: RangeTest) -> RangeTest:
    """Cancel a queued or running range test (409 when it has finished). A queued job is
    cancelled now; a running one gets cancel_requested, which its worker obeys. The test is
    `cancelled` at once either way, as a study is."""
    if test.status in FINISHED:
        raise Conflict(f"Range test `{test.id}` is already {test.status}.", field="status")
    # Lock order as the workers': the job row first, then the range-test row.
    session.execute(update(Job).where(Job.range_test_id == test.id,
                                      Job.state.in_(("waiting", "queued")))
                    .values(state="cancelled"))
    session.execute(update(Job).where(Job.range_test_id == test.id, Job.state == "running")
                    .values(cancel_requested=True))
    test = _locked(session, test.id)
    if test.status in FINISHED:  # it finished while we waited for the lock
        raise Conflict(f"Range test `{test.id}` is already {test.status}.", field="status")
    test.status, test.finished_at = "cancelled", utcnow()
    session.flush()
    return test


def delete(session: Session, test: RangeTest) -> None:
    """Delete a finished range test (its job goes with it). Studies that used its bounds keep
    them: they were copied into the study's spec at submission."""
    if test.status not in FINISHED:
        raise Conflict(f"Range test `{test.id}` is {test.status}; cancel it before deleting.",
                       field="status")
    session.delete(test)
    session.flush()
