"""Range-test requests and responses."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from lrsearch.errors import redact_paths
from service.schemas import ProvenanceOut, Training


class RangeTestCreate(Training):
    dataset: str = Field(max_length=64)
    batch_size: int = Field(default=32, ge=1, le=2**31 - 1)
    min_lr: float = Field(default=1e-7, gt=0)
    max_lr: float = Field(default=10.0, gt=0)
    num_iter: int = Field(default=100, ge=5, le=2**31 - 1)
    mode: Literal["exp", "linear"] = "exp"
    diverge_threshold: float = Field(default=4.0, gt=1)
    repeats: int = Field(default=1, ge=1, le=2**31 - 1)
    validation: bool = False
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class RangeTestSummary(BaseModel):
    """A range test without its curves: what lists show (`GET /v1/range-tests`, the web
    page). The sweeps, megabytes for long or repeated ones, are only in RangeTestOut."""

    id: str
    status: str
    request: dict[str, Any]
    suggestions: dict[str, Any] | None
    family_bounds: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def summary(cls, t: Any, suggestions: dict[str, Any] | None,
                family_bounds: dict[str, Any] | None) -> RangeTestSummary:
        """From the row's columns and the two parts of its result (read apart by the list)."""
        request = {k: v for k, v in t.request.items() if k != "dataset_file"}  # internal path
        return RangeTestSummary(id=t.id, status=t.status, request=request,
                                suggestions=suggestions, family_bounds=family_bounds,
                                error=redact_paths(t.error), created_at=t.created_at,
                                started_at=t.started_at, finished_at=t.finished_at)


class RangeTestOut(RangeTestSummary):
    """Everything about one range test, with each sweep's raw and smoothed curves."""

    sweeps: list[dict[str, Any]] | None
    provenance: ProvenanceOut | None = Field(
        default=None, description="what it trained on: Keras backend and version, Keras "
        "version, device, precision policy, XLA (null until it finished, and for range tests "
        "run before provenance was kept)")

    @classmethod
    def of(cls, t: Any) -> RangeTestOut:
        result = t.result or {}
        head = RangeTestSummary.summary(t, result.get("suggestions"),
                                        result.get("family_bounds"))
        return cls(**head.model_dump(), sweeps=result.get("sweeps"),
                   provenance=ProvenanceOut.of(result.get("provenance")))
