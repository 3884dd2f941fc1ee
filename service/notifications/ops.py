"""Study-end notifications: the tenants' signing secrets, the check at submission, the
delivery queued when a study ends, and the claim and record of each attempt.

Signature: every request carries `X-Lrsearch-Signature: t=<unix seconds>,v1=<hex>`, where hex
is HMAC-SHA256, keyed with the tenant's secret (its UTF-8 bytes, the whole `whsec_...` text),
of the bytes `<t>.` followed by the raw request body. A receiver recomputes it over the body
it received, compares in constant time, and refuses a `t` far from its clock. That window
does not stop a captured request from being replayed within it: a receiver also remembers
the `delivery_id` of the body (signed; the X-Lrsearch-Delivery header carries the same value
but is not signed, so a replay may change it) and processes each delivery_id once.

Delivery is at least once: a claim holds a delivery for one attempt under a lease (a
conditional UPDATE: two senders never send the same attempt), and the outcome is recorded
fenced by (owner, attempt). A sender that dies between sending and recording leaves the lease
to expire; the next claim records that attempt as lost and sends again, so a receiver may
see one notification twice: the same body, so the same delivery_id.

A delivery outlives its study: deleting the study sets its `study_id` to NULL and the body,
fixed when the study ended, is still sent (it is then seen only in the table and the logs).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from service.auth.ops import check_tenant
from service.config import Settings
from service.db import db_now, utcnow
from service.errors import Conflict, Invalid
from service.notifications import urls
from service.notifications.models import WebhookAttempt, WebhookDelivery, WebhookSecret
from service.requests import lock_tenant
from service.studies.models import Study
from service.studies.schemas import NotifySpec, StudyOut

log = logging.getLogger("lrsearch.notifications")

EVENT = "study.ended"
SIGNATURE_HEADER = "X-Lrsearch-Signature"
SECRET_PREFIX = "whsec_"
LOST = "lost: its sender stopped before recording the outcome (the receiver may have got it)"
SECRET_MISSING = ("The tenant has no webhook secret to sign notifications with: create it "
                  "first (POST /v1/webhook-secret, or `lrsearch keys webhook-secret --tenant "
                  "{tenant}` on the server).")


# -- signing ----------------------------------------------------------------------------
def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Lrsearch-Signature value: `t=<timestamp>,v1=<hex HMAC-SHA256 of "t." + body>`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


# -- secrets ----------------------------------------------------------------------------
def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)  # 256 random bits


def secret_of(session: Session, tenant: str) -> WebhookSecret | None:
    return session.get(WebhookSecret, tenant)


def rotate_secret(session: Session, tenant: str, *, replace: bool = True) -> WebhookSecret:
    """The tenant's new secret (its row, holding the secret: show it once, it is not shown
    again). Replaces the current one, which stops signing at once (deliveries still pending
    are signed with the new one); with `replace` False, 409 when the tenant already has one.
    Two rotations at once are serialised by the tenant's lock: the last one wins."""
    check_tenant(tenant)
    lock_tenant(session, "webhook_secret", tenant)
    row = session.get(WebhookSecret, tenant, populate_existing=True)
    if row is not None and not replace:
        raise Conflict(f"Tenant `{tenant}` already has a webhook secret (created "
                       f"{row.created_at:%Y-%m-%d %H:%M} UTC), which is not shown again; "
                       "rotate it to get a new one.", field="tenant")
    if row is None:
        row = WebhookSecret(tenant=tenant)
        session.add(row)
    row.secret, row.created_at = new_secret(), utcnow()
    session.flush()
    return row


# -- submission -------------------------------------------------------------------------
def check_request(session: Session, settings: Settings, tenant: str,
                  notify: NotifySpec | None) -> dict[str, Any] | None:
    """The study spec's `notify` ({"url": ...}), or None: 422 naming `notify.url` and the
    value when the URL may not be notified (urls.check_target: allow-list, public addresses),
    and naming `notify` when the tenant has no secret to sign with."""
    if notify is None:
        return None
    try:  # the request waits on DNS: a short bound, whatever the attempts' timeout is
        urls.check_target(notify.url, settings.notify_allowed_hosts,
                          min(settings.notify_timeout_seconds, urls.SUBMIT_RESOLVE_SECONDS))
    except urls.Refused as e:
        shown = notify.url if len(notify.url) <= 200 else notify.url[:200] + "..."
        raise Invalid(f"Argument `notify.url` cannot be notified: {e}. Received: "
                      f"notify.url={shown!r}", field="notify.url") from None
    if secret_of(session, tenant) is None:
        raise Invalid(SECRET_MISSING.format(tenant=tenant), field="notify")
    return {"url": notify.url}


# -- a study ends -----------------------------------------------------------------------
def body_of(study: Study, delivery_id: str) -> str:
    """The notification's JSON: the event, the delivery's id (covered by the signature with
    the rest: what a receiver dedupes on), when the study ended, and the study as
    GET /v1/studies/{id} shows it (without `request`, the submitted body)."""
    shown = StudyOut.of(study).model_dump(mode="json", exclude={"request"})
    doc = {"event": EVENT, "delivery_id": delivery_id, "ended_at": shown["finished_at"],
           "study": shown}
    return json.dumps(doc, separators=(",", ":"))


def study_ended(session: Session, study: Study) -> WebhookDelivery | None:
    """Queue the notification of a study that has just ended (succeeded, failed or
    cancelled), if it asked for one and none was queued yet: the caller holds the study's row
    and commits the delivery with the study's end, so an end is never left without its
    notification nor notified without having happened. Sent by the next sweep, even when the
    study is deleted before that (its body is a snapshot)."""
    notify = (study.spec or {}).get("notify")
    if not notify or study.status not in ("succeeded", "failed", "cancelled"):
        return None
    found = session.scalar(select(WebhookDelivery).where(WebhookDelivery.study_id == study.id))
    if found is not None:
        return found
    delivery_id = uuid.uuid4().hex
    row = WebhookDelivery(id=delivery_id, study_id=study.id, tenant=study.tenant, event=EVENT,
                          url=notify["url"], body=body_of(study, delivery_id), state="pending",
                          attempts=0, next_attempt_at=db_now(session))
    session.add(row)
    session.flush()
    return row


def deliveries(session: Session, study: Study) -> list[WebhookDelivery]:
    """The study's notifications with their attempts, oldest first."""
    return list(session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.study_id == study.id)
        .options(selectinload(WebhookDelivery.attempt_rows))
        .order_by(WebhookDelivery.created_at)))


# -- sending ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Claimed:
    """One attempt, held by `owner` under a lease: what to send, and the secret to sign it
    with (None: the tenant has none)."""

    delivery_id: str
    attempt: int
    owner: str
    tenant: str
    url: str
    body: str
    secret: str | None


@dataclass(frozen=True)
class Outcome:
    """How an attempt went: delivered (a 2xx answer), the answer's status, or the error."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None
    address: str | None = None


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...)."""
    return float(min(settings.notify_backoff_seconds * 2 ** (attempt - 1),
                     settings.notify_backoff_max_seconds))


def lease_seconds(settings: Settings) -> float:
    """How long a claim holds its delivery: well beyond the longest an attempt takes (it is
    abandoned once notify_timeout_seconds have passed, delivery.send) plus the writes of its
    claim and outcome, so a live sender's attempt is never claimed again."""
    return 3 * settings.notify_timeout_seconds + 30.0


def claim(session: Session, owner: str, lease: float, max_attempts: int) -> Claimed | None:
    """The next due attempt for `owner`, or None: a pending delivery whose time has come, or
    one whose sender's lease expired (its attempt is recorded as lost; after the last attempt
    it fails instead). The conditional UPDATE is the claim: of two senders racing for one
    delivery, only one changes the row (PostgreSQL re-checks the condition after the other's
    commit; SQLite serialises writers; rows another sender has locked are skipped).

    Oldest first, by when each became due: a pending delivery at `next_attempt_at`, an expired
    lease at `lease_expires_at` (its `next_attempt_at` is NULL, which SQLite sorts first and
    PostgreSQL last: ordering by that column alone would starve one kind on each)."""
    now = db_now(session)
    due = or_(and_(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now),
              and_(WebhookDelivery.state == "sending", WebhookDelivery.lease_expires_at < now))
    due_since = func.coalesce(WebhookDelivery.next_attempt_at, WebhookDelivery.lease_expires_at)
    query = (select(WebhookDelivery.id, WebhookDelivery.state, WebhookDelivery.attempts,
                    WebhookDelivery.lease_owner)
             .where(due).order_by(due_since, WebhookDelivery.id).limit(5))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    for delivery_id, state, attempts, previous in session.execute(query).all():
        if state == "sending" and attempts >= max_attempts:
            failed = session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, due)
                .values(state="failed", finished_at=now, lease_owner=None,
                        lease_expires_at=None, next_attempt_at=None, last_error=LOST))
            if failed.rowcount:  # type: ignore[attr-defined]
                _close_lost(session, delivery_id, attempts, now, previous)
                log.warning("notification %s failed: its last attempt was lost", delivery_id)
            continue
        row = session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, due)
            .values(state="sending", attempts=WebhookDelivery.attempts + 1, lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease), next_attempt_at=None)
            .returning(WebhookDelivery.attempts, WebhookDelivery.url, WebhookDelivery.body,
                       WebhookDelivery.tenant)).first()
        if row is None:  # another sender took it first
            continue
        attempt, url, body, tenant = row
        if state == "sending":
            _close_lost(session, delivery_id, attempt - 1, now, previous)
        session.add(WebhookAttempt(delivery_id=delivery_id, attempt=attempt, sender=owner,
                                   started_at=now))
        session.flush()
        secret = secret_of(session, tenant)
        return Claimed(delivery_id, attempt, owner, tenant, url, body,
                       secret.secret if secret is not None else None)
    return None


def _close_lost(session: Session, delivery_id: str, attempt: int, now: Any,
                owner: str | None) -> None:
    log.warning("notification %s attempt %s was lost (sender %s)", delivery_id, attempt, owner)
    session.execute(update(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id,
                                                 WebhookAttempt.attempt == attempt,
                                                 WebhookAttempt.finished_at.is_(None))
                    .values(finished_at=now, error=LOST))


def record(session: Session, claimed: Claimed, outcome: Outcome, settings: Settings
           ) -> str | None:
    """Write an attempt's outcome: delivered; failed after the last attempt; else pending
    again, due after the backoff. Returns the delivery's new state, None when the claim was
    no longer ours (its lease expired and another sender took over: only the attempt's own
    row is written)."""
    now = db_now(session)
    retry_at = None
    values: dict[str, Any]
    if outcome.delivered:
        state, values = "delivered", {"finished_at": now, "last_error": None}
    elif claimed.attempt >= settings.notify_max_attempts:
        state, values = "failed", {"finished_at": now, "last_error": outcome.error}
    else:
        retry_at = now + timedelta(seconds=backoff(settings, claimed.attempt))
        state, values = "pending", {"next_attempt_at": retry_at, "last_error": outcome.error}
    owned = session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id == claimed.delivery_id,
                                      WebhookDelivery.state == "sending",
                                      WebhookDelivery.lease_owner == claimed.owner,
                                      WebhookDelivery.attempts == claimed.attempt)
        .values(state=state, lease_owner=None, lease_expires_at=None, **values))
    ours = bool(owned.rowcount)  # type: ignore[attr-defined]
    session.execute(update(WebhookAttempt).where(
        WebhookAttempt.delivery_id == claimed.delivery_id,
        WebhookAttempt.attempt == claimed.attempt)
        .values(finished_at=now, status_code=outcome.status_code, error=outcome.error,
                address=outcome.address, retry_at=retry_at if ours else None))
    session.flush()
    if not ours:
        log.warning("notification %s attempt %s: the claim was lost before its outcome was "
                    "recorded", claimed.delivery_id, claimed.attempt)
        return None
    return state
