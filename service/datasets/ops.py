"""Dataset use cases: built-in datasets from the library, uploads stored under the data dir,
and references to files the workers read (registered by a worker's `dataset` job)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lrsearch import datasets
from lrsearch.datasets.npz import DatasetTooLarge
from lrsearch.datasets.references import (
    KerasDataset,
    Source,
    apart_from,
    check_source,
    tenant_roots,
    visible,
)
from lrsearch.datasets.uploaded import UploadSummary, check_name, check_npz, inflated_prefix
from lrsearch.models import Head
from lrsearch.spec import DataRef
from service import storage
from service.config import Settings
from service.datasets.models import UploadedDataset
from service.errors import Conflict, Invalid, NotFound, TooLarge, TooMany
from service.jobs.models import Job
from service.requests import lock_tenant
from service.usage import active_specs


def find_upload(session: Session, tenant: str, name: str) -> UploadedDataset | None:
    return session.scalar(select(UploadedDataset).where(UploadedDataset.tenant == tenant,
                                                        UploadedDataset.name == name))


@dataclass(frozen=True)
class Resolved:
    """A dataset a request names, as a run reads it: `data` (what the RunSpec stores), and its
    input shape and head, None while a reference is still being registered."""

    data: DataRef
    shape: tuple[int, ...] | None
    head: Head | None

    @property
    def pending(self) -> bool:
        return self.shape is None


def resolve(session: Session, settings: Settings, tenant: str, name: str) -> Resolved:
    """The dataset a request names; 422 when it is unknown, its files are missing (a built-in,
    checked without loading it) or its registration failed."""
    if name in datasets.SOURCES:
        datasets.check_available(name, data_dir=settings.data_dir)
        found = datasets.SOURCES.get(name)
        return Resolved(DataRef(name=name), found.input_shape, found.head)
    row = find_upload(session, tenant, name)
    if row is None:
        raise Invalid(f"Unknown dataset `{name}`. Built-in datasets: "
                      f"{', '.join(datasets.SOURCES.names())}; the tenant's own: see "
                      "GET /v1/datasets.", field="dataset")
    if row.status == "failed":
        raise Invalid(f"Dataset `{name}` failed registration: {row.error} Fix the files, then "
                      f"register it again (DELETE /v1/datasets/{name}, then POST).",
                      field="dataset")
    if row.source is None:  # an .npz upload
        return Resolved(DataRef(name=name, file=row.path, task=row.head.kind),
                        tuple(row.input_shape), row.head)
    data = DataRef(name=name, source=row.reference, registered=row.facts)
    if row.status == "pending":
        return Resolved(data, None, None)
    return Resolved(data, tuple(row.input_shape), row.head)


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


def _check(tmp: Path, settings: Settings) -> UploadSummary:
    """The library's bounded-memory validation: directory and headers before anything is
    decompressed, then the values a chunk at a time (never the arrays whole in the API)."""
    try:
        return check_npz(tmp, max_decompressed_bytes=settings.max_decompressed_bytes)
    except DatasetTooLarge as e:
        raise TooLarge(f"{e}. The limit is LRSEARCH_MAX_DECOMPRESSED_BYTES="
                       f"{settings.max_decompressed_bytes}.", field=e.field) from None


def upload(session: Session, settings: Settings, tenant: str, name: str, stream: IO[bytes]
           ) -> UploadedDataset:
    """Validate the .npz (bounded memory) and the tenant's quota before anything is kept; then
    keep file and row. The temporary `*.part` file is removed on every failure."""
    check_name(name)
    if name in datasets.SOURCES or find_upload(session, tenant, name) is not None:
        raise Conflict(f"A dataset named `{name}` already exists.", field="name")
    folder = Path(settings.data_dir).resolve() / "uploads" / tenant
    final = folder / f"{name}.npz"
    with storage.incoming(folder) as tmp:
        sha, size = storage.save(stream, tmp, settings.max_upload_bytes)
        # A first look without the lock spares the validation work of an upload that cannot
        # fit; the check that counts is the locked one in storage.keep.
        storage.check_quota(settings, tenant, storage.stored_bytes(session, tenant), size)
        data = _check(tmp, settings)
        row = UploadedDataset(tenant=tenant, name=name, input_shape=list(data.input_shape),
                              train_samples=data.train_samples,
                              val_samples=data.val_samples, sha256=sha, size_bytes=size,
                              path=str(final))
        row.set_head(data.head)
        storage.keep(session, settings, tenant, row, size, "dataset")
        # Moved only once the row is in: a concurrent upload of the same name fails above and
        # cannot overwrite this file.
        tmp.replace(final)
        return row


def register(session: Session, settings: Settings, tenant: str, name: str, source: Source
             ) -> UploadedDataset:
    """Store a dataset reference `pending` and queue its registration job (a worker reads the
    files). Checked first: the name, the URIs against LRSEARCH_DATA_ROOTS (fully, symlinks
    included, where this machine sees the root; the job checks again either way), and the
    tenant's pending registrations (429 beyond LRSEARCH_MAX_PENDING_DATASETS)."""
    check_name(name)
    if name in datasets.SOURCES or find_upload(session, tenant, name) is not None:
        raise Conflict(f"A dataset named `{name}` already exists.", field="name")
    if not isinstance(source, KerasDataset):
        roots = tenant_roots(settings.data_roots, tenant)
        source = check_source(source, roots, deep=visible(source.uri, roots))
        apart_from(source, settings.data_dir, "the service's data directory")
    lock_tenant(session, "dataset", tenant)
    pending = session.scalar(select(func.count()).select_from(UploadedDataset).where(
        UploadedDataset.tenant == tenant, UploadedDataset.status == "pending")) or 0
    if pending >= settings.max_pending_datasets:
        raise TooMany(f"Tenant `{tenant}` already has {pending} datasets being registered, "
                      f"the limit (LRSEARCH_MAX_PENDING_DATASETS="
                      f"{settings.max_pending_datasets}); wait for one to finish.",
                      field="tenant")
    row = UploadedDataset(tenant=tenant, name=name, status="pending", input_shape=[],
                          task="classes", num_classes=None, target_shape=[], train_samples=0,
                          val_samples=0, sha256="", size_bytes=0, path="",
                          source=source.model_dump(mode="json"))
    storage.keep(session, settings, tenant, row, 0, "dataset")
    session.add(Job(kind="dataset", tenant=tenant, dataset_id=row.id, state="queued"))
    session.flush()
    return row


def delete(session: Session, tenant: str, name: str) -> Path | None:
    """Delete a dataset's row (a pending registration's job goes with it); returns an upload's
    file, for the caller to remove once the deletion committed (None for a reference: its
    files are the tenant's own). Holds the locks that study and range-test creation take, so
    a submission that checked the dataset a moment ago cannot commit after this deletion (it
    checks again under the lock)."""
    if name in datasets.SOURCES:
        raise Conflict(f"`{name}` is a built-in dataset; it cannot be deleted.", field="name")
    lock_tenant(session, "study", tenant)
    lock_tenant(session, "range_test", tenant)
    row = find_upload(session, tenant, name)
    if row is None:
        raise NotFound(f"Unknown dataset `{name}`.", field="name")
    for what, ident, spec in active_specs(session, tenant):
        if spec.data.name == name:
            raise Conflict(f"Dataset `{name}` is used by unfinished {what} `{ident}`.",
                           field="name")
    path = Path(row.path) if row.source is None else None
    # Its registration job's row before the dataset's (whose deletion cascades to it): the
    # order in which the reaper and the worker lock them, so none of them deadlocks.
    locked = select(Job.id).where(Job.dataset_id == row.id)
    if session.get_bind().dialect.name == "postgresql":
        locked = locked.with_for_update()
    session.execute(locked).all()
    session.delete(row)
    session.flush()
    return path


def remove_upload(settings: Settings, path: Path) -> None:
    """Remove a deleted upload's file and the members workers inflated from it."""
    path.unlink(missing_ok=True)
    prefix = inflated_prefix(Path(settings.data_dir).resolve(), path)
    for folder in prefix.parent.glob(f"{prefix.name}.*"):
        shutil.rmtree(folder, ignore_errors=True)

