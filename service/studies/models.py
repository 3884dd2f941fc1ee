"""Studies, their trials and the trials' per-epoch curve points."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db import Base, JSONType, UTCDateTime, utcnow

STUDY_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
TRIAL_STATES = ("queued", "running", "complete", "pruned", "failed", "cancelled")
# What a trial slot is for: the search itself (slots 0 .. n_trials-1, Optuna study
# `optuna_study_name`), the constant-LR baseline (the next `baseline.trials` slots, Optuna
# study `<optuna_study_name>.baseline`), or a confirmation run (retraining a finished trial's
# configuration with a fresh seed, after the search; never told to Optuna).
TRIAL_ROLES = ("search", "baseline", "confirm")


class Study(Base):
    """A submitted search. The summary columns (counts, best) are kept current by whoever
    changes a trial, so status polls read one row."""

    __tablename__ = "studies"
    __table_args__ = (UniqueConstraint("tenant", "idempotency_key"),
                      Index("ix_studies_tenant_created", "tenant", "created_at"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default="local")
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)  # as submitted
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)  # validated and resolved
    optuna_study_name: Mapped[str] = mapped_column(String(200), unique=True)
    n_trials: Mapped[int] = mapped_column(Integer)
    n_queued: Mapped[int] = mapped_column(Integer)
    n_running: Mapped[int] = mapped_column(Integer, default=0)
    n_complete: Mapped[int] = mapped_column(Integer, default=0)
    n_pruned: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    n_cancelled: Mapped[int] = mapped_column(Integer, default=0)
    best_value: Mapped[float | None] = mapped_column(Float)
    best_trial_number: Mapped[int | None] = mapped_column(Integer)
    best_family: Mapped[str | None] = mapped_column(String(64))
    best_params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    # Budgets (spec["budget"]): epochs trained by every attempt of every trial, finished
    # trials since the best value last improved, and why the study stopped before running
    # every slot (None: it ran them all).
    epochs_run: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    since_best: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    stop_reason: Mapped[str | None] = mapped_column(Text)
    # Every slot: the search's n_trials, the baseline's, and the confirmation runs once the
    # search has ended (`phase` then goes from "search" to "confirm"; "ended": the study
    # stopped early because every trial would fail, and no confirmation will run).
    n_slots: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    phase: Mapped[str] = mapped_column(String(16), default="search", server_default="search")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    trials: Mapped[list[Trial]] = relationship(back_populates="study",
                                               cascade="all, delete-orphan",
                                               passive_deletes=True)


class Trial(Base):
    """One attempt-tracked trial slot of a study, with the Optuna trial number it ran as."""

    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("study_id", "slot"),
                      Index("ix_trials_study_number", "study_id", "number"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    slot: Mapped[int] = mapped_column(Integer)
    number: Mapped[int | None] = mapped_column(Integer)  # Optuna's trial number
    family: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(16), default="running")
    value: Mapped[float | None] = mapped_column(Float)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    worker: Mapped[str | None] = mapped_column(String(200))
    steps_per_epoch: Mapped[int | None] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(Integer)  # the seed the trial ran with
    role: Mapped[str] = mapped_column(String(16), default="search", server_default="search")
    # A confirmation run's: the slot of the trial whose configuration it retrains.
    confirms: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    # The epoch its last attempt started from: the number of epochs restored from the
    # checkpoint its previous attempt left (lrsearch.checkpoints); None when it ran from the
    # start.
    resumed_from_epoch: Mapped[int | None] = mapped_column(Integer)
    # What its last attempt trained on (lrsearch.runtime.Runtime.provenance): Keras backend
    # and version, Keras version, device, precision policy, XLA; None until it starts.
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    study: Mapped[Study] = relationship(back_populates="trials")
    points: Mapped[list[CurvePoint]] = relationship(back_populates="trial",
                                                    cascade="all, delete-orphan",
                                                    passive_deletes=True,
                                                    order_by="CurvePoint.epoch")


class CurvePoint(Base):
    """One epoch of a trial: the LR applied at its first and last step, its duration, and
    every metric Keras logged for it (`metrics`: Keras' name -> value, None where the value
    was not finite), whatever the model was compiled with."""

    __tablename__ = "curve_points"

    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"),
                                          primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    lr_first: Mapped[float | None] = mapped_column(Float)
    lr_last: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, float | None]] = mapped_column(JSONType, default=dict)

    trial: Mapped[Trial] = relationship(back_populates="points")
