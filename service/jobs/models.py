"""The rows workers claim: one per trial slot of a study, one per range test, one per dataset
registration.

A job is "waiting" while the dataset its study or range test trains on is being registered:
claims take only "queued" jobs, and the registration's end queues them (or fails their work).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, UTCDateTime, utcnow

JOB_STATES = ("waiting", "queued", "running", "done", "failed", "cancelled")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("study_id", "slot"),
                      Index("ix_jobs_state_created", "state", "created_at"),
                      # fair claims: which tenants have queued jobs, and each one's oldest
                      Index("ix_jobs_state_tenant_created", "state", "tenant", "created_at"),
                      # ... and when each tenant last had a job claimed
                      Index("ix_jobs_tenant_claimed", "tenant", "claimed_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # "trial", "range_test" or "dataset"
    tenant: Mapped[str] = mapped_column(String(64))  # whose work: claims take turns by tenant
    study_id: Mapped[str | None] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    slot: Mapped[int | None] = mapped_column(Integer)
    range_test_id: Mapped[str | None] = mapped_column(
        ForeignKey("range_tests.id", ondelete="CASCADE"))
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True)  # a registration's
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # the fencing token: +1 per claim
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # retryable fails
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # database clock
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the latest claim
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
