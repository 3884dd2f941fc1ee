"""Datasets: the built-in ones and the tenant's uploads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, File, Form, UploadFile

from service.datasets import ops
from service.deps import SessionDep, SettingsDep, TenantDep
from service.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=ERROR_RESPONSES)


@router.get("")
def list_datasets(session: SessionDep, settings: SettingsDep, tenant: TenantDep
                  ) -> list[dict[str, Any]]:
    """Built-in datasets (with whether their files are present) and uploaded ones."""
    return ops.list_all(session, settings, tenant)


@router.post("", status_code=201)
def upload_dataset(session: SessionDep, settings: SettingsDep, tenant: TenantDep,
                   name: Annotated[str, Form(max_length=64)],
                   file: Annotated[UploadFile, File()]) -> dict[str, Any]:
    """Upload an .npz (x_train, y_train, optional x_val, y_val); validated before it is kept
    (422 naming the array; 413 beyond the decompressed size or the tenant's storage quota)."""
    return ops.upload(session, settings, tenant, name, file.file).info()


@router.get("/{name}")
def get_dataset(name: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep
                ) -> dict[str, Any]:
    """One dataset."""
    return ops.get(session, settings, tenant, name)


@router.delete("/{name}", status_code=204)
def delete_dataset(name: str, session: SessionDep, tenant: TenantDep,
                   background: BackgroundTasks) -> None:
    """Delete an uploaded dataset that no unfinished study or range test uses."""
    path = ops.delete(session, tenant, name)
    # The file goes once the deletion committed (the session dependency commits before
    # background tasks run): a failed commit keeps both the row and its file.
    background.add_task(path.unlink, missing_ok=True)
