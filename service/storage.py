"""What every upload shares (datasets and models): a size-limited, hashed copy into a
temporary file, and the tenant's storage quota counted over all of its uploads under a lock."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.config import Settings
from service.errors import Conflict, TooLarge

CHUNK = 1 << 20


@contextlib.contextmanager
def incoming(folder: Path) -> Iterator[Path]:
    """A temporary `*.part` file in `folder` (created with it) for an upload on its way in;
    removed when the block ends unless it was moved to its final name by then."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, raw = tempfile.mkstemp(dir=folder, suffix=".part")
    os.close(fd)
    try:
        yield Path(raw)
    finally:
        Path(raw).unlink(missing_ok=True)


def save(stream: IO[bytes], tmp: Path, limit: int) -> tuple[str, int]:
    """Copy the upload into `tmp`, hashing it and enforcing the limit: (sha256, size)."""
    digest, size = hashlib.sha256(), 0
    with open(tmp, "wb") as out:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"The upload is larger than {limit} bytes "
                               "(LRSEARCH_MAX_UPLOAD_BYTES).", field="file")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


def stored_bytes(session: Session, tenant: str, exclude: object | None = None) -> int:
    """Bytes the tenant keeps in uploads of every kind; `exclude` is a row not to count (the
    one being added, already flushed)."""
    from service.datasets.models import UploadedDataset
    from service.models.models import UploadedModel

    total = 0
    for model in (UploadedDataset, UploadedModel):
        query = select(func.coalesce(func.sum(model.size_bytes), 0)).where(
            model.tenant == tenant)
        if isinstance(exclude, model):
            query = query.where(model.id != exclude.id)
        total += int(session.scalar(query) or 0)
    return total


def check_quota(settings: Settings, tenant: str, used: int, size: int) -> None:
    quota = settings.tenant_storage_bytes
    if used + size > quota:
        raise TooLarge(f"Tenant `{tenant}` would keep {used + size} bytes of uploads, over its "
                       f"quota: used={used}, this upload={size}, tenant_storage_bytes={quota} "
                       "(LRSEARCH_TENANT_STORAGE_BYTES). Delete uploads no longer needed.",
                       field="file")


def keep(session: Session, settings: Settings, tenant: str, row: Any, size: int,
         what: str) -> None:
    """Insert an upload's row (409 when a concurrent upload of its name committed first),
    then check the tenant's quota under the quota lock, counting every other upload."""
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"A {what} named `{row.name}` already exists.", field="name") from None
    lock_quota(session, tenant)
    check_quota(settings, tenant, stored_bytes(session, tenant, row), size)


def lock_quota(session: Session, tenant: str) -> None:
    """Serialize the tenant's quota checks until this transaction ends.

    Two uploads racing must not both pass when together they exceed the quota. Re-checking
    after our INSERT alone is not enough on PostgreSQL: under READ COMMITTED neither
    transaction sees the other's uncommitted row. So PostgreSQL takes a transaction-scoped
    advisory lock keyed by the tenant: the second upload waits here until the first commits or
    rolls back, then its sum includes the first's row. SQLite needs no extra lock: the INSERT
    flushed just before holds its single write lock until commit, so a concurrent upload's
    INSERT waits (busy timeout) and the sum that follows it sees the committed row."""
    if session.get_bind().dialect.name == "postgresql":
        key = func.hashtextextended(f"lrsearch.upload-quota:{tenant}", 0)
        session.execute(select(func.pg_advisory_xact_lock(key)))
