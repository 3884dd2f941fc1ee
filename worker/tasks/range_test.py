"""A remote LR range test: run it in the child and store the curves and suggestions. A
cancellation while it runs stops the child at the next heartbeat."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from service.db import utcnow
from service.jobs import ops as jobs
from service.jobs.ops import Claim
from service.range_tests.models import RangeTest
from worker.context import data_options, run_once

if TYPE_CHECKING:
    from worker.context import TaskContext
    from worker.lease import Heartbeat


def _test(s: Session, c: Claim) -> RangeTest:
    test = s.get(RangeTest, c.range_test_id)
    assert test is not None  # the job row cascades with it: fenced() found the job
    return test


def _start(s: Session, c: Claim, lease_seconds: float
           ) -> tuple[dict[str, Any], str] | None:
    """Mark the test running and return what to run (its spec; a range test stored before
    specs existed has it in its request); None when it was cancelled."""
    job = jobs.fenced(s, c, lease_seconds)
    test = _test(s, c)
    if job.cancel_requested or test.status == "cancelled":
        _cancelled(s, c)
        return None
    test.status, test.started_at, test.error = "running", utcnow(), None
    return dict(test.spec or test.request), test.tenant


def _cancelled(s: Session, c: Claim) -> None:
    jobs.fenced(s, c)
    test = _test(s, c)
    test.status, test.finished_at = "cancelled", test.finished_at or utcnow()
    test.error = test.error or "cancelled by its owner"
    jobs.finish(s, c, "cancelled", "cancelled by its owner")


def _finish(s: Session, c: Claim, kind: str, payload: dict[str, Any]) -> None:
    job = jobs.fenced(s, c)
    test = _test(s, c)
    if job.cancel_requested or test.status == "cancelled":
        _cancelled(s, c)  # cancelled while it ran: the owner's word wins over a late result
        return
    test.finished_at = utcnow()
    if kind == "done":
        test.status, test.result = "succeeded", payload
        jobs.finish(s, c, "done")
    else:
        reason = f"{payload.get('kind', kind)}: {payload.get('message', '')}"
        test.status, test.error = "failed", f"{reason}\n{payload.get('traceback', '')}".strip()
        jobs.finish(s, c, "failed", reason)


def run(w: TaskContext, c: Claim, beat: Heartbeat) -> None:
    started = w.db(lambda s: _start(s, c, w.settings.lease_seconds))
    if started is None:
        return
    spec, tenant = started
    task = {"kind": "range_test", "spec": spec, "data_dir": str(w.settings.data_dir),
            "max_params": w.settings.max_model_params,
            **data_options(w.settings, tenant)}
    answer = run_once(w, c, beat, task, lambda s: _cancelled(s, c))
    if answer is None:
        return
    kind, payload = answer
    w.db(lambda s: _finish(s, c, kind, payload))
