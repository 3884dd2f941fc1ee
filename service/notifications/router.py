"""/v1/webhook-secret (the tenant's signing secret) and /v1/studies/{id}/notifications."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import SessionDep, TenantDep
from service.notifications import ops
from service.notifications.schemas import DeliveriesOut, DeliveryOut, SecretInfo, SecretOut
from service.schemas import ERROR_RESPONSES
from service.studies import ops as studies

router = APIRouter(tags=["notifications"], responses=ERROR_RESPONSES)


@router.post("/v1/webhook-secret", status_code=201)
def rotate_webhook_secret(session: SessionDep, tenant: TenantDep) -> SecretOut:
    """A new secret for signing this tenant's notifications, shown only in this answer. It
    replaces the current one at once: notifications sent from now on, retries of earlier
    ones included, are signed with it."""
    return SecretOut.of(ops.rotate_secret(session, tenant))


@router.get("/v1/webhook-secret")
def get_webhook_secret(session: SessionDep, tenant: TenantDep) -> SecretInfo:
    """Whether this tenant has a webhook secret and when it was made (never the secret)."""
    row = ops.secret_of(session, tenant)
    return SecretInfo(tenant=tenant, exists=row is not None,
                      created_at=row.created_at if row is not None else None)


@router.get("/v1/studies/{study_id}/notifications")
def list_notifications(study_id: str, session: SessionDep, tenant: TenantDep
                       ) -> DeliveriesOut:
    """The study's end notification (none until it ends, or when it asked for none) with
    every attempt: when, the receiver's status or the error, and when the next is due."""
    study = studies.get(session, tenant, study_id)
    return DeliveriesOut(items=[DeliveryOut.of(d) for d in ops.deliveries(session, study)])
