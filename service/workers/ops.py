"""Worker presence rows: written by workers, counted by /metrics and the web page."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.db import db_now
from service.workers.models import WorkerRow

FORGET_AFTER = timedelta(days=7)  # rows of workers gone this long are deleted


def seen(session: Session, name: str, host: str, pid: int, gpu: int | None,
         capabilities: dict[str, Any] | None = None) -> None:
    """Create or refresh this worker's row (last_seen_at = now, and what it can load)."""
    now = db_now(session)  # the database's clock: the API compares it with its own reads
    row = session.get(WorkerRow, name)
    if row is None:
        session.add(WorkerRow(name=name, host=host, pid=pid, gpu=gpu, started_at=now,
                              last_seen_at=now, capabilities=capabilities))
        session.execute(delete(WorkerRow).where(WorkerRow.last_seen_at < now - FORGET_AFTER))
    else:
        row.last_seen_at, row.stopped_at = now, None
        if capabilities is not None and row.capabilities != capabilities:
            row.capabilities = capabilities
    session.flush()


def stopped(session: Session, name: str) -> None:
    session.execute(update(WorkerRow).where(WorkerRow.name == name)
                    .values(stopped_at=db_now(session)))


def alive(session: Session, within_seconds: float) -> int:
    """Workers seen in the last `within_seconds` (a lease) that did not say they stopped."""
    since = db_now(session) - timedelta(seconds=within_seconds)
    return session.scalar(select(func.count()).select_from(WorkerRow)
                          .where(WorkerRow.last_seen_at >= since,
                                 WorkerRow.stopped_at.is_(None))) or 0


@dataclass
class Capabilities:
    """What the live workers can load, together: custom Keras objects by registered name
    (`package>Name`) and plugin model builders by name (with their parameters)."""

    custom_objects: set[str] = field(default_factory=set)
    builders: dict[str, dict[str, Any]] = field(default_factory=dict)


def capabilities(session: Session, within_seconds: float) -> Capabilities:
    """What every worker seen in the last `within_seconds` can load: the intersection of what
    they publish, so that a job the API accepts can run on whichever worker claims it (a
    worker without an upload's plugin would fail the trial for good). Workers still starting
    (nothing published yet) are not counted."""
    since = db_now(session) - timedelta(seconds=within_seconds)
    rows = [caps for caps in session.scalars(select(WorkerRow.capabilities).where(
        WorkerRow.last_seen_at >= since, WorkerRow.stopped_at.is_(None))).all()
        if isinstance(caps, dict)]
    if not rows:
        return Capabilities()
    objects = set.intersection(*(set(map(str, c.get("custom_objects", []))) for c in rows))
    names = set.intersection(*({str(b.get("name")) for b in c.get("builders", [])}
                               for c in rows))
    builders = {str(b.get("name")): b for b in rows[0].get("builders", [])
                if str(b.get("name")) in names}
    return Capabilities(custom_objects=objects, builders=builders)
