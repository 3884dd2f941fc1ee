"""The end of a dataset registration: the row becomes `ready` with what the worker found, or
`failed` with the reason; then the studies and range tests that wait for it are settled.

Work submitted on a pending dataset has its jobs "waiting" and a run spec whose data reference
has no registration facts yet (the model could not be fitted to an unknown input shape). When
the registration ends ready, each such run is completed (`service.runs.complete`: facts in,
built-in model checked against the now known shape) and its jobs queued; a run that does not
fit fails with the reason. When it ends failed, the work fails with the dataset's reason.

Settling holds the tenant's study and range-test creation locks: a submission that saw the
dataset pending either committed its waiting jobs before (they are settled here) or sees the
new status after (and queues them itself), never neither."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lrsearch.datasets.references import Registered
from lrsearch.errors import LRSearchError
from lrsearch.spec import RunSpec
from service.datasets.models import UploadedDataset
from service.db import utcnow
from service.errors import APIError
from service.jobs.models import Job
from service.range_tests.models import RangeTest
from service.requests import lock_tenant
from service.studies import progress
from service.studies.models import Study

if TYPE_CHECKING:
    from service.config import Settings

log = logging.getLogger("lrsearch.datasets")


def succeed(session: Session, settings: Settings, row: UploadedDataset,
            facts: Registered) -> None:
    """The registration found `facts`: the dataset is ready, and its waiting work queued."""
    row.status, row.error, row.updated_at = "ready", None, utcnow()
    row.registered = facts.model_dump(mode="json")
    row.input_shape = list(facts.input_shape)
    row.set_head(facts.head)
    row.train_samples, row.val_samples = facts.train_examples, facts.val_examples
    session.flush()
    _settle(session, row, settings)


def mark_failed(row: UploadedDataset, reason: str) -> None:
    """The row alone: `failed` with `reason` (its waiting work is settled by `sweep`)."""
    row.status, row.error, row.updated_at = "failed", reason[:4000], utcnow()


def fail(session: Session, row: UploadedDataset, reason: str) -> None:
    """The registration failed: the dataset is `failed` with `reason`, and its waiting work
    fails with it."""
    mark_failed(row, reason)
    session.flush()
    _settle(session, row, None)


def sweep(session: Session, settings: Settings) -> int:
    """Settle work still waiting for a dataset that is no longer pending (or is gone): what a
    registration's end could not settle in its own transaction. Returns the datasets settled.
    Cheap when nothing waits: one query on the waiting jobs."""
    waiting = session.execute(select(Job.tenant, Job.study_id, Job.range_test_id).where(
        Job.state == "waiting").distinct()).all()
    names: set[tuple[str, str]] = set()
    for tenant, study_id, test_id in waiting:
        work = session.get(Study, study_id) if study_id else session.get(RangeTest, test_id)
        if work is not None:
            names.add((tenant, work_name(work)))
    settled = 0
    for tenant, name in sorted(names):
        row = session.scalar(select(UploadedDataset).where(UploadedDataset.tenant == tenant,
                                                           UploadedDataset.name == name))
        if row is not None and row.status == "pending":
            continue
        if row is None:  # deleted (only possible once nothing waited): fail what waits
            row = UploadedDataset(tenant=tenant, name=name, status="failed",
                                  error="the dataset was deleted")
        try:  # one dataset's trouble (an old spec that no longer reads) spares the others
            with session.begin_nested():
                _settle(session, row, settings if row.status == "ready" else None)
        except Exception:
            log.exception("could not settle the work waiting for dataset %s/%s", tenant, name)
            continue
        settled += 1
    return settled


def _waiting(session: Session, row: UploadedDataset) -> tuple[list[Study], list[RangeTest]]:
    """The tenant's studies and range tests with waiting jobs whose run reads `row`."""
    jobs = session.execute(select(Job.study_id, Job.range_test_id).where(
        Job.tenant == row.tenant, Job.state == "waiting").distinct()).all()
    studies = [s for s in (session.get(Study, sid) for sid in {j[0] for j in jobs if j[0]})
               if s is not None and RunSpec.from_stored(s.spec).data.name == row.name]
    tests = [t for t in (session.get(RangeTest, tid) for tid in {j[1] for j in jobs if j[1]})
             if t is not None and RunSpec.from_stored(t.spec or t.request).data.name
             == row.name]
    return studies, tests


def _complete(session: Session, settings: Settings, work: Study | RangeTest
              ) -> dict[str, Any] | str:
    """The work's spec with its run completed for the ready dataset, or the reason it cannot
    train on it."""
    from service.runs import complete  # runs imports this module's package: import late

    spec = dict(work.spec or {})
    try:
        run = complete(session, settings, work.tenant, RunSpec.from_stored(spec))
    except (APIError, LRSearchError) as e:
        field = f" ({e.field})" if e.field else ""
        return f"It cannot train on dataset `{work_name(work)}` as registered{field}: {e}"
    return {**spec, "run": run.stored()}


def work_name(work: Study | RangeTest) -> str:
    return RunSpec.from_stored(work.spec or {}).data.name


def _settle(session: Session, row: UploadedDataset, settings: Settings | None) -> None:
    lock_tenant(session, "study", row.tenant)
    lock_tenant(session, "range_test", row.tenant)
    studies, tests = _waiting(session, row)
    failure = f"Dataset `{row.name}` failed registration: {row.error}"
    for study in studies:
        spec = failure if settings is None else _complete(session, settings, study)
        if isinstance(spec, str):
            progress.fail_fast(session, study.id, spec)
            continue
        session.execute(update(Job).where(Job.study_id == study.id, Job.state == "waiting")
                        .values(state="queued"))
        study.spec = spec  # after the job rows: the lock order of cancellation
    for test in tests:
        spec = failure if settings is None else _complete(session, settings, test)
        if isinstance(spec, str):
            session.execute(update(Job).where(Job.range_test_id == test.id,
                                              Job.state == "waiting")
                            .values(state="cancelled"))
            test.status, test.error, test.finished_at = "failed", spec, utcnow()
            continue
        session.execute(update(Job).where(Job.range_test_id == test.id, Job.state == "waiting")
                        .values(state="queued"))
        test.spec = spec
    if studies or tests:
        log.info("dataset %s/%s %s: settled %d studies and %d range tests", row.tenant,
                 row.name, row.status, len(studies), len(tests))
    session.flush()
