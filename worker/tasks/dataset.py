"""A dataset registration: the child reads the files (or downloads a Keras dataset) and
answers what it found; the dataset becomes `ready` or `failed` with the reason, and the
studies and range tests waiting for it are queued or failed (service/datasets/registration).

Reading runs in the child, not here: it is heavy (every image decoded once), may import
TensorFlow, and a crash in a decoder must cost a child, not the worker."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from lrsearch.datasets.references import Registered, tenant_roots
from service.datasets import registration
from service.datasets.models import UploadedDataset
from service.jobs import ops as jobs
from service.jobs.ops import Claim
from service.requests import lock_tenant
from worker.context import run_once

if TYPE_CHECKING:
    from worker.context import TaskContext
    from worker.lease import Heartbeat

log = logging.getLogger("lrsearch.worker.dataset")


def _start(s: Session, c: Claim, lease_seconds: float
           ) -> tuple[dict[str, Any], str] | None:
    """The source to register; None when the dataset is gone (deleted while queued: its job
    would have gone with it, so only a stale claim sees this) or no longer pending."""
    jobs.fenced(s, c, lease_seconds)
    row = s.get(UploadedDataset, c.dataset_id)
    if row is None or row.status != "pending" or row.source is None:
        jobs.finish(s, c, "cancelled", "the dataset was deleted or already registered")
        return None
    return dict(row.source), row.tenant


def _finish(s: Session, c: Claim, w: TaskContext, kind: str, payload: dict[str, Any]) -> None:
    # The creation locks first, as a deletion takes them before the dataset row (whose
    # deletion cascades to this job's row): job row first would deadlock with it.
    found = s.get(UploadedDataset, c.dataset_id)
    if found is not None:
        lock_tenant(s, "study", found.tenant)
        lock_tenant(s, "range_test", found.tenant)
    jobs.fenced(s, c)
    s.expire_all()  # read the row again under the locks
    row = s.get(UploadedDataset, c.dataset_id)
    if row is None or row.status != "pending":
        jobs.finish(s, c, "cancelled", "the dataset was deleted while it was registered")
        return
    if kind == "done":
        registration.succeed(s, w.settings, row, Registered.model_validate(payload))
        jobs.finish(s, c, "done")
        return
    reason = str(payload.get("message", kind))
    registration.fail(s, row, reason)
    jobs.finish(s, c, "failed", reason)


def run(w: TaskContext, c: Claim, beat: Heartbeat) -> None:
    started = w.db(lambda s: _start(s, c, w.settings.lease_seconds))
    if started is None:
        return
    source, tenant = started
    settings = w.settings
    task = {"kind": "register_dataset", "source": source,
            "roots": list(tenant_roots(settings.data_roots, tenant)),
            "data_dir": str(settings.data_dir),
            "downloads": {"allow": settings.downloads, "mirror": settings.data_mirror,
                          "mirror_digests": dict(settings.data_mirror_digests)}}
    # A cancellation means the dataset was deleted: its job went with it.
    answer = run_once(w, c, beat, task, None)
    if answer is None:
        return
    kind, payload = answer
    w.db(lambda s: _finish(s, c, w, kind, payload))
    log.info("dataset job %s ended: %s %s", c.job_id, kind,
             payload.get("message", "") if kind == "failed" else "")
