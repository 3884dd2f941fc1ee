"""Dataset use cases: built-in datasets from the library, uploads stored under the data dir."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lrsearch import datasets
from lrsearch.datasets.npz import DatasetTooLarge
from lrsearch.datasets.uploaded import UploadSummary, check_name, check_npz
from lrsearch.models import Head
from service import storage
from service.config import Settings
from service.datasets.models import UploadedDataset
from service.errors import Conflict, Invalid, NotFound, TooLarge
from service.requests import lock_tenant
from service.usage import active_specs


def find_upload(session: Session, tenant: str, name: str) -> UploadedDataset | None:
    return session.scalar(select(UploadedDataset).where(UploadedDataset.tenant == tenant,
                                                        UploadedDataset.name == name))


def resolve(session: Session, settings: Settings, tenant: str, name: str
            ) -> tuple[tuple[int, ...], str | None]:
    """(input shape, file of an upload or None) of a dataset a request names; 422 if it is
    unknown or its files are missing (checked without loading it)."""
    if name in datasets.SOURCES:
        datasets.check_available(name, data_dir=settings.data_dir)
        return datasets.SOURCES.get(name).input_shape, None
    row = find_upload(session, tenant, name)
    if row is None:
        raise Invalid(f"Unknown dataset `{name}`. Built-in datasets: "
                      f"{', '.join(datasets.SOURCES.names())}; uploaded: see GET /v1/datasets.",
                      field="dataset")
    return tuple(row.input_shape), row.path


def head(session: Session, tenant: str, name: str) -> Head:
    """The output a model needs for a dataset `resolve` accepted: a softmax over its classes
    or a linear layer for its float targets (what shapes the model's last layer)."""
    if name in datasets.SOURCES:
        return datasets.SOURCES.get(name).head
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
    for what, ident, spec in active_specs(session, tenant):
        if spec.data.name == name:
            raise Conflict(f"Dataset `{name}` is used by unfinished {what} `{ident}`.",
                           field="name")
    path = Path(row.path)
    session.delete(row)
    session.flush()
    return path
