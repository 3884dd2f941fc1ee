"""Parameter checks shared by the model modules (pure Python: the API runs them)."""

from __future__ import annotations

import math
from typing import Any

from lrsearch.errors import ModelError


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def require_fraction(model: str, name: str, value: Any) -> None:
    """A rate such as dropout: a finite number in [0, 1)."""
    if not _number(value) or not 0 <= value < 1:
        raise ModelError(f"{model}: argument `{name}` must be a number in [0, 1). Received: "
                         f"{name}={value!r}", field=f"model.params.{name}")


def require_non_negative(model: str, name: str, value: Any) -> None:
    """A penalty such as weight decay: a finite number >= 0."""
    if not _number(value) or value < 0:
        raise ModelError(f"{model}: argument `{name}` must be a finite number >= 0. Received: "
                         f"{name}={value!r}", field=f"model.params.{name}")
