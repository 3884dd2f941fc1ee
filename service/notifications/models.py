"""Study-end notifications: each tenant's signing secret, one delivery per ended study that
asked for one, and every attempt to deliver it.

The secret is stored as it is: signing needs it, so it cannot be kept as a hash the way API
keys are. Encrypting it at rest is out of scope; whoever can read this table can sign
notifications for its tenant (not call the API: that needs an API key).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db import Base, UTCDateTime, utcnow

DELIVERY_STATES = ("pending", "sending", "delivered", "failed")


class WebhookSecret(Base):
    """A tenant's current signing secret (rotating replaces it: the old one stops signing)."""

    __tablename__ = "webhook_secrets"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One notification to send: the body is fixed when the study ends, so every attempt
    sends the same bytes (only the signature's timestamp changes).

    `state`: pending (due at `next_attempt_at`), sending (claimed by `lease_owner` until
    `lease_expires_at`; a sender that dies leaves it to be claimed again once that passes),
    delivered (a 2xx answer) or failed (`attempts` reached the configured maximum).
    `attempts` counts the attempts started; the attempt rows say how each went.
    `study_id` becomes NULL when the study is deleted: the delivery is still sent (its body
    is a snapshot), so a study cancelled and deleted at once is still notified."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_state_due", "state", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[str | None] = mapped_column(
        ForeignKey("studies.id", ondelete="SET NULL"), unique=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)  # the JSON sent, exactly as signed
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # delivered or failed

    attempt_rows: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="delivery", cascade="all, delete-orphan", passive_deletes=True,
        order_by="WebhookAttempt.attempt")


class WebhookAttempt(Base):
    """One attempt: when it started and ended, who sent it and to which address, the answer's
    status code or the error, and when the next attempt is due (null: none follows)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    sender: Mapped[str] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="attempt_rows")
