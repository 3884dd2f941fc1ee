"""The base of the library's plain-data records (run specs, dataset references): frozen, and
refusing unknown fields, so a typo in a request is an error instead of a silent default."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
