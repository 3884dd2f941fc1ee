"""Dataset use cases: built-in datasets from the library, uploads stored under the data dir."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lrsearch import datasets
from lrsearch.datasets.uploaded import check_name
from lrsearch.errors import DatasetError
from service.config import Settings
from service.datasets.models import UploadedDataset
from service.errors import Conflict, Invalid, NotFound, TooLarge
from service.jobs.models import Job
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


def _save(stream: IO[bytes], folder: Path, limit: int) -> tuple[Path, str, int]:
    """Copy the upload to a temporary file in `folder`, hashing it and enforcing the limit."""
    folder.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
    with os.fdopen(fd, "wb") as out:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            if size > limit:
                out.close()
                os.unlink(tmp)
                raise TooLarge(f"The upload is larger than {limit} bytes "
                               "(LRSEARCH_MAX_UPLOAD_BYTES).", field="file")
            digest.update(chunk)
            out.write(chunk)
    return Path(tmp), digest.hexdigest(), size


def upload(session: Session, settings: Settings, tenant: str, name: str, stream: IO[bytes]
           ) -> UploadedDataset:
    """Validate the .npz with the library before anything is stored; then keep file and row."""
    check_name(name)
    if name in datasets.SOURCES or find_upload(session, tenant, name) is not None:
        raise Conflict(f"A dataset named `{name}` already exists.", field="name")
    folder = Path(settings.data_dir).resolve() / "uploads" / tenant
    tmp, sha, size = _save(stream, folder, settings.max_upload_bytes)
    try:
        data = datasets.load_npz(tmp, name)
    except DatasetError:
        tmp.unlink(missing_ok=True)
        raise
    final = folder / f"{name}.npz"
    tmp.replace(final)
    row = UploadedDataset(tenant=tenant, name=name, input_shape=list(data.input_shape),
                          num_classes=data.num_classes, train_samples=len(data.x_train),
                          val_samples=len(data.x_val), sha256=sha, size_bytes=size,
                          path=str(final))
    session.add(row)
    session.flush()
    return row


def delete(session: Session, tenant: str, name: str) -> None:
    if name in datasets.SOURCES:
        raise Conflict(f"`{name}` is a built-in dataset; it cannot be deleted.", field="name")
    row = find_upload(session, tenant, name)
    if row is None:
        raise NotFound(f"Unknown dataset `{name}`.", field="name")
    busy = session.scalar(select(Study.id).join(Job, Job.study_id == Study.id).where(
        Study.tenant == tenant, Job.state.in_(("queued", "running")),
        Study.spec["dataset"].as_string() == name).limit(1))
    if busy is not None:
        raise Conflict(f"Dataset `{name}` is used by unfinished study `{busy}`.", field="name")
    Path(row.path).unlink(missing_ok=True)
    session.delete(row)
    session.flush()
