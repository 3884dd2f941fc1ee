"""A trial's per-epoch history as the API returns it (`history`: one entry per epoch), read the
same way by the plots, the command line and the web page.

Each entry has `metrics`: every metric Keras logged for the epoch, by Keras' names ("loss",
"val_loss", "accuracy", "val_auc", ...). Servers before it sent four fixed fields instead
(`loss`, `val_loss`, `metric` = accuracy, `val_metric` = val_accuracy); they are read too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

# The response fields that carried four metrics before `metrics` existed.
OLD_FIELDS = {"loss": "loss", "val_loss": "val_loss", "accuracy": "metric",
              "val_accuracy": "val_metric"}


def metrics_of(point: Mapping[str, Any]) -> dict[str, float | None]:
    """One entry's metrics by Keras' names (from the old fields for an older server's entry);
    a value that is not a finite number is None."""
    metrics = point.get("metrics")
    if not isinstance(metrics, Mapping):
        metrics = {name: point[field] for name, field in OLD_FIELDS.items() if field in point}
    return {str(name): _number(value) for name, value in metrics.items()}


def epoch_value(point: Mapping[str, Any], metric: str) -> float | None:
    """One entry's value of `metric` (Keras' name), None when it was not logged or not
    finite."""
    return metrics_of(point).get(metric)


def _order(name: str) -> tuple[bool, str, bool]:
    base = name.removeprefix("val_")
    return base != "loss", base, name.startswith("val_")


def metric_columns(history: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every metric name present in any entry, loss first, then by name, each training
    metric followed by its `val_` twin: loss, val_loss, accuracy, val_accuracy, mae, ..."""
    names = {name for point in history for name in metrics_of(point)}
    return sorted(names, key=_order)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
