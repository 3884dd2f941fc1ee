"""Models: the built-in architectures, the workers' plugin builders, and the tenant's uploads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, File, Form, UploadFile

from service.deps import SessionDep, SettingsDep, TenantDep
from service.models import ops
from service.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)


@router.get("")
def list_models(session: SessionDep, settings: SettingsDep, tenant: TenantDep
                ) -> list[dict[str, Any]]:
    """Every model a study may name: built-ins and plugin builders (`{"name", "params"}`),
    and uploads (`{"upload": name, "init": "uploaded" | "fresh"}`); `source` says which."""
    return ops.catalog(session, settings, tenant)


@router.post("", status_code=201)
def upload_model(session: SessionDep, settings: SettingsDep, tenant: TenantDep,
                 name: Annotated[str, Form(max_length=64)],
                 file: Annotated[UploadFile, File()]) -> dict[str, Any]:
    """Upload a `.keras` file (model.save): validated without running it (422 naming a Lambda
    layer or an unknown class; 413 beyond the size limits or the tenant's quota)."""
    return ops.upload(session, settings, tenant, name, file.file).info()


@router.get("/{name}")
def get_model(name: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """One uploaded model: its digest, shapes, loss and metrics, custom classes."""
    return ops.get(session, tenant, name).info()


@router.delete("/{name}", status_code=204)
def delete_model(name: str, session: SessionDep, tenant: TenantDep,
                 background: BackgroundTasks) -> None:
    """Delete an uploaded model that no queued or running study or range test uses (409)."""
    path = ops.delete(session, tenant, name)
    background.add_task(path.unlink, missing_ok=True)  # once the deletion committed
