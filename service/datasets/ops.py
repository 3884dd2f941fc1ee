"""Dataset use cases: built-in datasets from the library, uploads stored under the data dir."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lrsearch import datasets
from lrsearch.datasets.npz import DatasetTooLarge
from lrsearch.datasets.uploaded import UploadSummary, check_name, check_npz
from lrsearch.models import Head
from service.config import Settings
from service.datasets.models import UploadedDataset
from service.errors import Conflict, Invalid, NotFound, TooLarge
from service.jobs.models import Job
from service.range_tests.models import RangeTest
from service.requests import lock_tenant
from service.studies.models import Study

CHUNK = 1 << 20


def find_upload(session: Session, tenant: str, name: str) -> UploadedDataset | None:
    return session.scalar(select(UploadedDataset).where(UploadedDataset.tenant == tenant,
                                                        UploadedDataset.name == name))


def resolve(session: Session, settings: Settings, tenant: str, name: str
            ) -> tuple[tuple[int, ...], str | None]:
    """(input shape, file of an upload or None) of a dataset a request names; 422 if it is
    unknown or its files are missing (checked without loading it)."""
    if name in datasets.SOURCES:
        datasets.check_available(name, data_dir=settings.data_dir)
        return datasets.SOURCES[name].input_shape, None
    row = find_upload(session, tenant, name)
    if row is None:
        raise Invalid(f"Unknown dataset `{name}`. Built-in datasets: "
                      f"{', '.join(datasets.SOURCES)}; uploaded: see GET /v1/datasets.",
                      field="dataset")
    return tuple(row.input_shape), row.path


def head(session: Session, tenant: str, name: str) -> Head:
    """The output a model needs for a dataset `resolve` accepted: a softmax over its classes
    or a linear layer for its float targets (what shapes the model's last layer)."""
    if name in datasets.SOURCES:
        return datasets.SOURCES[name].head
    row = find_upload(session, tenant, name)
    if row is None:
        raise Invalid(f"Unknown dataset `{name}`.", field="dataset")
    return row.head


def list_all(session: Session, settings: Settings, tenant: str) -> list[dict[str, Any]]:
    uploads = session.scalars(select(UploadedDataset).where(UploadedDataset.tenant == tenant)
                              .order_by(UploadedDataset.name)).all()
    return [*datasets.describe(settings.data_dir), *(u.info() for u in uploads)]


def get(session: Session, settings: Settings, tenant: str, name: str) -> dict[str, Any]:
    if name in datasets.SOURCES:
        return next(d for d in datasets.describe(settings.data_dir) if d["name"] == name)
    row = find_upload(session, tenant, name)
    if row is None:
        raise NotFound(f"Unknown dataset `{name}`.", field="name")
    return row.info()


def _save(stream: IO[bytes], tmp: Path, limit: int) -> tuple[str, int]:
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


def _check(tmp: Path, settings: Settings) -> UploadSummary:
    """The library's bounded-memory validation: directory and headers before anything is
    decompressed, then the values a chunk at a time (never the arrays whole in the API)."""
    try:
        return check_npz(tmp, max_decompressed_bytes=settings.max_decompressed_bytes)
    except DatasetTooLarge as e:
        raise TooLarge(f"{e}. The limit is LRSEARCH_MAX_DECOMPRESSED_BYTES="
                       f"{settings.max_decompressed_bytes}.", field=e.field) from None


def _stored_bytes(session: Session, tenant: str, exclude: int | None = None) -> int:
    query = select(func.coalesce(func.sum(UploadedDataset.size_bytes), 0)).where(
        UploadedDataset.tenant == tenant)
    if exclude is not None:
        query = query.where(UploadedDataset.id != exclude)
    return int(session.scalar(query) or 0)


def _check_quota(settings: Settings, tenant: str, used: int, size: int) -> None:
    quota = settings.tenant_storage_bytes
    if used + size > quota:
        raise TooLarge(f"Tenant `{tenant}` would keep {used + size} bytes of uploads, over its "
                       f"quota: used={used}, this upload={size}, tenant_storage_bytes={quota} "
                       "(LRSEARCH_TENANT_STORAGE_BYTES). Delete datasets no longer needed.",
                       field="file")


def _lock_quota(session: Session, tenant: str) -> None:
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


def upload(session: Session, settings: Settings, tenant: str, name: str, stream: IO[bytes]
           ) -> UploadedDataset:
    """Validate the .npz (bounded memory) and the tenant's quota before anything is kept; then
    keep file and row. The temporary `*.part` file is removed on every failure."""
    check_name(name)
    if name in datasets.SOURCES or find_upload(session, tenant, name) is not None:
        raise Conflict(f"A dataset named `{name}` already exists.", field="name")
    folder = Path(settings.data_dir).resolve() / "uploads" / tenant
    folder.mkdir(parents=True, exist_ok=True)
    fd, raw = tempfile.mkstemp(dir=folder, suffix=".part")
    os.close(fd)
    tmp, final = Path(raw), folder / f"{name}.npz"
    try:
        sha, size = _save(stream, tmp, settings.max_upload_bytes)
        # A first look without the lock spares the validation work of an upload that cannot
        # fit; the check that counts is the locked one below.
        _check_quota(settings, tenant, _stored_bytes(session, tenant), size)
        data = _check(tmp, settings)
        row = UploadedDataset(tenant=tenant, name=name, input_shape=list(data.input_shape),
                              train_samples=data.train_samples,
                              val_samples=data.val_samples, sha256=sha, size_bytes=size,
                              path=str(final))
        row.set_head(data.head)
        session.add(row)
        try:
            session.flush()
        except IntegrityError:  # the same name uploaded concurrently, committed first
            raise Conflict(f"A dataset named `{name}` already exists.", field="name") from None
        _lock_quota(session, tenant)
        _check_quota(settings, tenant, _stored_bytes(session, tenant, exclude=row.id), size)
        # Moved only once the row is in: a concurrent upload of the same name fails above and
        # cannot overwrite this file.
        tmp.replace(final)
        return row
    finally:
        tmp.unlink(missing_ok=True)  # gone already when it became the dataset's file


def delete(session: Session, tenant: str, name: str) -> Path:
    """Delete an upload's row; returns its file, for the caller to remove once the deletion
    committed. Holds the locks that study and range-test creation take, so a submission
    that checked the dataset a moment ago cannot commit after this deletion (it checks
    again under the lock)."""
    if name in datasets.SOURCES:
        raise Conflict(f"`{name}` is a built-in dataset; it cannot be deleted.", field="name")
    lock_tenant(session, "study", tenant)
    lock_tenant(session, "range_test", tenant)
    row = find_upload(session, tenant, name)
    if row is None:
        raise NotFound(f"Unknown dataset `{name}`.", field="name")
    busy = session.scalar(select(Study.id).join(Job, Job.study_id == Study.id).where(
        Study.tenant == tenant, Job.state.in_(("queued", "running")),
        func.coalesce(Study.spec[("run", "data", "name")].as_string(),  # a RunSpec
                      Study.spec["dataset"].as_string()) == name).limit(1))  # older rows
    if busy is not None:
        raise Conflict(f"Dataset `{name}` is used by unfinished study `{busy}`.", field="name")
    test = session.scalar(select(RangeTest.id).join(Job, Job.range_test_id == RangeTest.id).where(
        RangeTest.tenant == tenant, Job.kind == "range_test", Job.state.in_(("queued", "running")),
        RangeTest.request["dataset"].as_string() == name).limit(1))
    if test is not None:
        raise Conflict(f"Dataset `{name}` is used by unfinished range test `{test}`.",
                       field="name")
    path = Path(row.path)
    session.delete(row)
    session.flush()
    return path
