"""A remote LR range test: run it in the child and store the curves and suggestions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from service.db import utcnow
from service.jobs import ops as jobs
from service.jobs.ops import Claim
from service.range_tests.models import RangeTest

if TYPE_CHECKING:
    from worker.lease import Heartbeat
    from worker.loop import Worker


def _start(s: Session, c: Claim, lease_seconds: float) -> dict[str, Any]:
    jobs.fenced(s, c, lease_seconds)
    test = s.get(RangeTest, c.range_test_id)
    assert test is not None
    test.status, test.started_at, test.error = "running", utcnow(), None
    return dict(test.request)


def _finish(s: Session, c: Claim, kind: str, payload: dict[str, Any]) -> None:
    jobs.fenced(s, c)
    test = s.get(RangeTest, c.range_test_id)
    assert test is not None
    test.finished_at = utcnow()
    if kind == "done":
        test.status, test.result = "succeeded", payload
        jobs.finish(s, c, "done")
    else:
        reason = f"{payload.get('kind', kind)}: {payload.get('message', '')}"
        test.status, test.error = "failed", f"{reason}\n{payload.get('traceback', '')}".strip()
        jobs.finish(s, c, "failed", reason)


def run(w: Worker, c: Claim, beat: Heartbeat) -> None:
    from worker.loop import Released, Retryable

    request = w.db(lambda s: _start(s, c, w.settings.lease_seconds))
    task = {"kind": "range_test", "request": request, "data_dir": str(w.settings.data_dir)}
    try:
        kind, payload = w.supervise(c, beat, task, lambda kind, payload: None)
    except Released:
        w.db(lambda s: jobs.release(s, c))
        return
    except Retryable as e:
        reason = str(e)
        w.db(lambda s: jobs.retry_or_fail(s, jobs.fenced(s, c), reason,
                                          w.settings.max_attempts))
        return
    w.db(lambda s: _finish(s, c, kind, payload))
