"""Uploaded datasets (the built-in ones have no rows), each with its task: class ids
(`num_classes`) or float targets (`target_shape` per sample)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lrsearch.models import Head
from service.db import Base, JSONType, UTCDateTime, utcnow


class UploadedDataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("tenant", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64), default="local")
    name: Mapped[str] = mapped_column(String(64))
    input_shape: Mapped[list[int]] = mapped_column(JSONType)
    task: Mapped[str] = mapped_column(String(16))  # "classes" or "targets" (Head.kind)
    num_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: targets
    target_shape: Mapped[list[int]] = mapped_column(JSONType)  # [] for class ids
    train_samples: Mapped[int] = mapped_column(Integer)
    val_samples: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def head(self) -> Head:
        """The output a model trained on this dataset needs."""
        return Head.from_dict({"task": self.task, "num_classes": self.num_classes,
                               "target_shape": self.target_shape})

    def set_head(self, head: Head) -> None:
        self.task, self.num_classes = head.kind, head.num_classes
        self.target_shape = list(head.target_shape)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "builtin": False, "input_shape": self.input_shape,
                **self.head.as_dict(), "train_samples": self.train_samples,
                "val_samples": self.val_samples, "sha256": self.sha256,
                "size_bytes": self.size_bytes, "created_at": self.created_at.isoformat()}
