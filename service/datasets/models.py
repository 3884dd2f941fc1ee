"""A tenant's datasets (the built-in ones have no rows): `.npz` uploads, ready once stored, and
dataset references (files the workers read), `pending` until a worker's `dataset` job registers
them, then `ready` or `failed` with the reason.

A ready dataset has its task: class ids (`num_classes`) or float targets (`target_shape` per
sample). A reference keeps the source as submitted (`source`) and what registration found
(`registered`: counts, shapes, class names, the files' fingerprint)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lrsearch.datasets.references import Registered, Source, SourceAdapter
from lrsearch.models import Head
from service.db import Base, JSONType, UTCDateTime, utcnow

DATASET_STATES = ("pending", "ready", "failed")


class UploadedDataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("tenant", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64), default="local")
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="ready", server_default="ready")
    input_shape: Mapped[list[int]] = mapped_column(JSONType)  # [] until registered
    task: Mapped[str] = mapped_column(String(16))  # "classes" or "targets" (Head.kind)
    num_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: targets
    target_shape: Mapped[list[int]] = mapped_column(JSONType)  # [] for class ids
    train_samples: Mapped[int] = mapped_column(Integer)
    val_samples: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))  # "" for a reference
    size_bytes: Mapped[int] = mapped_column(BigInteger)  # the stored upload; 0 for a reference
    path: Mapped[str] = mapped_column(String(1000))  # the stored upload; "" for a reference
    source: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    registered: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def head(self) -> Head:
        """The output a model trained on this dataset needs (a ready dataset's)."""
        return Head.from_dict({"task": self.task, "num_classes": self.num_classes,
                               "target_shape": self.target_shape})

    def set_head(self, head: Head) -> None:
        self.task, self.num_classes = head.kind, head.num_classes
        self.target_shape = list(head.target_shape)

    @property
    def reference(self) -> Source | None:
        """The source a reference reads (None for an upload)."""
        return None if self.source is None else SourceAdapter.validate_python(self.source)

    @property
    def facts(self) -> Registered | None:
        """What registration found (None for an upload, and until a reference is ready)."""
        return None if self.registered is None else Registered.model_validate(self.registered)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "builtin": False, "status": self.status,
                               "created_at": self.created_at.isoformat()}
        if self.source is not None:
            out["source"] = self.source
            out["error"] = self.error
            if self.updated_at is not None:
                out["updated_at"] = self.updated_at.isoformat()
        else:
            out.update(sha256=self.sha256, size_bytes=self.size_bytes)
        if self.status == "ready":
            out.update(input_shape=self.input_shape, **self.head.as_dict(),
                       train_samples=self.train_samples, val_samples=self.val_samples)
            facts = self.facts
            if facts is not None and facts.classes:
                out["classes"] = list(facts.classes)
        return out
