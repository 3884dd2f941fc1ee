"""Uploaded models: validated without running them, stored per tenant under their digest; and
the catalog of everything a study may name (built-ins, plugin builders, uploads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lrsearch import models
from lrsearch.datasets.uploaded import check_name
from lrsearch.errors import ModelError
from lrsearch.models.keras_file import KerasFileSummary, ModelTooLarge, check_keras_file
from lrsearch.spec import UploadedModel as UploadRef
from service import storage
from service.config import Settings
from service.errors import Conflict, Invalid, NotFound, TooLarge
from service.models.models import UploadedModel
from service.requests import lock_tenant
from service.usage import active_specs
from service.workers import ops as workers


def live_capabilities(session: Session, settings: Settings) -> workers.Capabilities:
    """What the workers alive in the last lease period can load."""
    return workers.capabilities(session, settings.lease_seconds * 2)


def find(session: Session, tenant: str, name: str) -> UploadedModel | None:
    return session.scalar(select(UploadedModel).where(UploadedModel.tenant == tenant,
                                                      UploadedModel.name == name))


def get(session: Session, tenant: str, name: str) -> UploadedModel:
    row = find(session, tenant, name)
    if row is None:
        raise NotFound(f"Unknown uploaded model `{name}`.", field="name")
    return row


def catalog(session: Session, settings: Settings, tenant: str) -> list[dict[str, Any]]:
    """Built-in architectures, the live workers' plugin builders, then the tenant's uploads."""
    builtin = [{**models.spec(n).as_dict(), "source": "builtin"} for n in models.names()]
    plugins = [b for n, b in sorted(live_capabilities(session, settings).builders.items())
               if n not in models.names()]
    uploads = session.scalars(select(UploadedModel).where(UploadedModel.tenant == tenant)
                              .order_by(UploadedModel.name)).all()
    return [*builtin, *plugins, *(u.info() for u in uploads)]


def _check(tmp: Path, settings: Settings, known_custom: set[str]) -> KerasFileSummary:
    try:
        return check_keras_file(tmp, max_decompressed_bytes=settings.max_decompressed_bytes,
                                known_custom=known_custom)
    except ModelTooLarge as e:
        raise TooLarge(f"{e}. The limit is LRSEARCH_MAX_DECOMPRESSED_BYTES="
                       f"{settings.max_decompressed_bytes}.", field=e.field) from None


def upload(session: Session, settings: Settings, tenant: str, name: str,
           stream: Any) -> UploadedModel:
    """Validate the archive (bounded; nothing in it runs) and the tenant's quota before
    anything is kept; then keep file and row. The temporary file goes on every failure."""
    check_name(name)
    if find(session, tenant, name) is not None:
        raise Conflict(f"A model named `{name}` already exists.", field="name")
    folder = Path(settings.data_dir).resolve() / "models" / tenant
    with storage.incoming(folder) as tmp:
        sha, size = storage.save(stream, tmp, settings.max_upload_bytes)
        storage.check_quota(settings, tenant, storage.stored_bytes(session, tenant), size)
        summary = _check(tmp, settings, live_capabilities(session, settings).custom_objects)
        row = UploadedModel(tenant=tenant, name=name, sha256=sha, size_bytes=size, path="",
                            summary=summary.as_dict())
        storage.keep(session, settings, tenant, row, size, "model")
        # One file per row (its digest and id): deleting one upload never removes a file
        # another upload, committed or in flight, still needs.
        final = folder / f"{sha}.{row.id}.keras"
        row.path = str(final)
        session.flush()
        tmp.replace(final)
        return row


def delete(session: Session, tenant: str, name: str) -> Path:
    """Delete an upload that no queued or running study or range test uses; returns its file
    for the caller to remove after the commit."""
    lock_tenant(session, "study", tenant)
    lock_tenant(session, "range_test", tenant)
    row = get(session, tenant, name)
    for what, ident, spec in active_specs(session, tenant):
        if isinstance(spec.model, UploadRef) and spec.model.upload == name:
            raise Conflict(f"Model `{name}` is used by unfinished {what} `{ident}`.",
                           field="name")
    path = Path(row.path)
    session.delete(row)
    session.flush()
    return path


def reference(session: Session, tenant: str, upload: str, init: str,
              live: workers.Capabilities) -> tuple[UploadRef, UploadedModel]:
    """A request's `{"upload", "init"}` as the RunSpec's reference; the upload must exist and
    every custom class it needs must still be loadable by the live workers (`live`)."""
    row = find(session, tenant, upload)
    if row is None:
        raise Invalid(f"Unknown uploaded model `{upload}`. Upload it first (POST /v1/models).",
                      field="model.upload")
    missing = sorted(set(row.summary.get("custom_objects", [])) - live.custom_objects)
    if missing:
        raise Invalid(f"Model `{upload}` needs {', '.join(missing)}, which the live workers' "
                      "plugins do not all register now (LRSEARCH_PLUGINS on the workers).",
                      field="model.upload")
    return UploadRef(upload=upload, sha256=row.sha256, init=init,  # type: ignore[arg-type]
                     compiled=bool(row.summary.get("compiled")), file=row.path), row


def builder_params(name: str, params: dict[str, Any], live: workers.Capabilities
                   ) -> dict[str, Any]:
    """A plugin builder's parameters (the builder as the live workers publish it): defaults
    filled in, unknown names refused."""
    builder = live.builders.get(name)
    if builder is None:
        known = [*models.names(), *live.builders]
        raise ModelError(f"Unknown model `{name}`. Known models: {', '.join(known)}",
                         field="model.name")
    defaults = {p["name"]: p.get("default") for p in builder.get("parameters", [])}
    for key in params:
        if key not in defaults:
            raise ModelError(f"{name}: unknown parameter `{key}`. Known parameters: "
                             f"{', '.join(defaults) or 'none'}", field=f"model.params.{key}")
    return {**defaults, **params}
