"""Uploaded Keras models (built-ins and plugin builders have no rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, JSONType, UTCDateTime, utcnow


class UploadedModel(Base):
    """A `.keras` file a tenant uploaded under a name, identified by its content (`sha256`)."""

    __tablename__ = "model_uploads"
    __table_args__ = (UniqueConstraint("tenant", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64), default="local")
    name: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(1000))
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType)  # KerasFileSummary.as_dict()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "source": "upload", "sha256": self.sha256,
                "size_bytes": self.size_bytes, **self.summary,
                "created_at": self.created_at.isoformat()}
