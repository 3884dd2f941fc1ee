"""Worker presence rows: written by workers, counted by /metrics and the web page."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.db import db_now
from service.workers.models import WorkerRow

FORGET_AFTER = timedelta(days=7)  # rows of workers gone this long are deleted


def seen(session: Session, name: str, host: str, pid: int, gpu: int | None) -> None:
    """Create or refresh this worker's row (last_seen_at = now)."""
    now = db_now(session)  # the database's clock: the API compares it with its own reads
    row = session.get(WorkerRow, name)
    if row is None:
        session.add(WorkerRow(name=name, host=host, pid=pid, gpu=gpu, started_at=now,
                              last_seen_at=now))
        session.execute(delete(WorkerRow).where(WorkerRow.last_seen_at < now - FORGET_AFTER))
    else:
        row.last_seen_at, row.stopped_at = now, None
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
