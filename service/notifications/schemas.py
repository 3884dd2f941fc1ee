"""Responses of the notification endpoints."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from service.notifications.models import WebhookAttempt, WebhookDelivery, WebhookSecret


class SecretOut(BaseModel):
    """A new webhook secret, shown this once (only rotating gives another)."""

    tenant: str
    secret: str = Field(description="the HMAC-SHA256 key (its UTF-8 bytes) of the "
                        "X-Lrsearch-Signature header: t=<unix>,v1=<hex HMAC of \"t.\" + body>")
    created_at: datetime

    @classmethod
    def of(cls, row: WebhookSecret) -> SecretOut:
        return cls(tenant=row.tenant, secret=row.secret, created_at=row.created_at)


class SecretInfo(BaseModel):
    """Whether the tenant has a webhook secret, and since when (never the secret)."""

    tenant: str
    exists: bool
    created_at: datetime | None


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    finished_at: datetime | None = Field(description="null while it is being sent")
    status_code: int | None = Field(description="the receiver's HTTP status; null when no "
                                    "answer came (see `error`)")
    error: str | None = Field(description="why the attempt failed (a non-2xx status, a "
                              "connection error or timeout, a refused address), or null")
    address: str | None = Field(description="the IP address the request went to")
    retry_at: datetime | None = Field(description="when the next attempt is due (the "
                                      "backoff); null when none follows")

    @classmethod
    def of(cls, row: WebhookAttempt) -> AttemptOut:
        return cls(attempt=row.attempt, started_at=row.started_at, finished_at=row.finished_at,
                   status_code=row.status_code, error=row.error, address=row.address,
                   retry_at=row.retry_at)


class DeliveryOut(BaseModel):
    id: str = Field(description="the body's `delivery_id` (signed: what a receiver dedupes "
                    "on), also sent, unsigned, as the X-Lrsearch-Delivery header")
    event: str
    url: str
    state: str = Field(description="pending (waiting for its next attempt), sending, "
                       "delivered (a 2xx answer) or failed (every attempt failed)")
    n_attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    payload: dict[str, Any] = Field(description="the JSON body sent (the same on every "
                                    "attempt)")
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, row: WebhookDelivery) -> DeliveryOut:
        return cls(id=row.id, event=row.event, url=row.url, state=row.state,
                   n_attempts=row.attempts, next_attempt_at=row.next_attempt_at,
                   last_error=row.last_error, created_at=row.created_at,
                   finished_at=row.finished_at, payload=json.loads(row.body),
                   attempts=[AttemptOut.of(a) for a in row.attempt_rows])


class DeliveriesOut(BaseModel):
    items: list[DeliveryOut]
