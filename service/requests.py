"""What every work-creating request shares: configured maxima and Idempotency-Key replays."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import Conflict, Invalid


def require_at_most(*limits: tuple[str, int, int]) -> None:
    """(name, value, maximum) triples: 422 naming the first argument over its maximum."""
    for name, value, maximum in limits:
        if value > maximum:
            raise Invalid(f"Argument `{name}` must be <= {maximum}. Received: {name}={value}",
                          field=name)


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def replay(session: Session, model: Any, tenant: str, key: str | None, digest: str) -> Any:
    """The resource an earlier request with this Idempotency-Key created, or None; 409 when
    the key was used with a different body. `model` has tenant, idempotency_key, request_hash."""
    if key is None:
        return None
    found = session.scalar(select(model).where(model.tenant == tenant,
                                               model.idempotency_key == key))
    if found is not None and found.request_hash != digest:
        raise Conflict("This Idempotency-Key was used with a different request body.",
                       field="Idempotency-Key")
    return found
