"""Datasets: the built-in ones, the tenant's .npz uploads and dataset references."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lrsearch.datasets.references import Source, tenant_roots
from service.datasets import ops
from service.deps import SessionDep, SettingsDep, TenantDep
from service.errors import Invalid
from service.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=ERROR_RESPONSES)
roots_router = APIRouter(prefix="/v1/data-roots", tags=["datasets"], responses=ERROR_RESPONSES)


@roots_router.get("")
def data_roots(settings: SettingsDep, tenant: TenantDep) -> dict[str, Any]:
    """Where dataset references may point (LRSEARCH_DATA_ROOTS) and whether workers download
    Keras datasets on demand (LRSEARCH_DOWNLOADS)."""
    return {"roots": list(tenant_roots(settings.data_roots, tenant)),
            "downloads": settings.downloads}


class DatasetReferenceIn(BaseModel):
    """A dataset reference: files the workers read (under LRSEARCH_DATA_ROOTS), or a Keras
    dataset to download; registered by a worker."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64)
    source: Source


async def _reference(request: Request) -> DatasetReferenceIn | None:
    """The JSON body of a reference registration; None for any other content type (an upload
    is multipart, parsed by FastAPI itself)."""
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        return None
    try:
        return DatasetReferenceIn.model_validate_json(await request.body())
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from None


@router.get("")
def list_datasets(session: SessionDep, settings: SettingsDep, tenant: TenantDep
                  ) -> list[dict[str, Any]]:
    """Built-in datasets (with whether their files are present), the tenant's uploads and
    references (with their registration status)."""
    return ops.list_all(session, settings, tenant)


@router.post("", status_code=201)
def create_dataset(session: SessionDep, settings: SettingsDep, tenant: TenantDep,
                   reference: Annotated[DatasetReferenceIn | None, Depends(_reference)],
                   name: Annotated[str | None, Form(max_length=64)] = None,
                   file: Annotated[UploadFile | None, File()] = None) -> dict[str, Any]:
    """Either upload an .npz (multipart: `name`, `file` with x_train, y_train, optional x_val,
    y_val; validated before it is kept: 422 naming the array, 413 beyond the decompressed size
    or the tenant's storage quota), or register a reference (JSON: `{"name", "source": {"kind":
    "image_folder" | "csv" | "tfrecord" | "npy" | "keras", ...}}`; 201 with status `pending`,
    then `ready` or `failed` once a worker has read the files)."""
    if reference is not None:
        return ops.register(session, settings, tenant, reference.name,
                            reference.source).info()
    if name is None or file is None:
        raise Invalid("Send a multipart upload with `name` and `file` (an .npz), or a JSON "
                      "body {\"name\": ..., \"source\": {...}} to register a dataset reference.",
                      field="file" if name is not None else "name")
    return ops.upload(session, settings, tenant, name, file.file).info()


@router.get("/{name}")
def get_dataset(name: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep
                ) -> dict[str, Any]:
    """One dataset; a reference shows its status, counts once ready, and the reason it
    failed."""
    return ops.get(session, settings, tenant, name)


@router.delete("/{name}", status_code=204)
def delete_dataset(name: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
                   background: BackgroundTasks) -> None:
    """Delete a dataset that no unfinished study or range test uses (a reference's files are
    left alone)."""
    path = ops.delete(session, tenant, name)
    # The file goes once the deletion committed (the session dependency commits before
    # background tasks run): a failed commit keeps both the row and its file.
    if path is not None:
        background.add_task(ops.remove_upload, settings, path)
