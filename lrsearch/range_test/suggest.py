"""Learning-rate suggestions from a range-test curve, and search bounds per family (pure).

Three suggestions, as fastai's `lr_find` gives them:
- steepest: the LR where the smoothed loss falls fastest against log10(LR) (the most negative
  np.gradient), ignoring the first 10 % of the sweep (the EMA is still warming up there) and
  the point that triggered divergence;
- minimum_div10: the LR of the lowest smoothed loss, divided by 10;
- valley: the LR halfway (in sweep steps) through the longest decreasing run of the smoothed
  loss (its longest strictly decreasing subsequence, from its first to its last element).
`lr_at_minimum` (the LR of the lowest smoothed loss) is kept as the upper limit of sensible LRs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lrsearch.schedules import names
from lrsearch.schedules.base import param_specs, registry

KEYS = ("steepest", "minimum_div10", "valley", "lr_at_minimum")


@dataclass(frozen=True)
class Suggestions:
    """Suggested LRs (None where the curve is too short to tell)."""

    steepest: float | None
    minimum_div10: float | None
    valley: float | None
    lr_at_minimum: float | None

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)

    @property
    def center(self) -> float | None:
        """The LR the family bounds are built around: the geometric mean of valley and steepest
        (either alone when the other is missing). Valley lands low when the loss has a long,
        slowly falling start; steepest lands high, close to the blow-up; their log-midpoint is
        the robust middle."""
        found = [v for v in (self.valley, self.steepest) if v is not None]
        return math.prod(found) ** (1.0 / len(found)) if found else None


def _longest_decreasing_span(losses: np.ndarray) -> tuple[int, int]:
    """(first, last) index of the longest strictly decreasing subsequence (earliest on ties)."""
    n = len(losses)
    length = np.ones(n, dtype=int)
    first = np.arange(n)
    for i in range(1, n):
        higher = np.flatnonzero(losses[:i] > losses[i])
        if higher.size:
            j = higher[np.argmax(length[higher])]
            length[i], first[i] = length[j] + 1, first[j]
    last = int(np.argmax(length))
    return int(first[last]), last


def suggest(lrs: Sequence[float] | np.ndarray, smoothed: Sequence[float] | np.ndarray,
            diverged: bool = False
            ) -> Suggestions:
    """Suggestions from one sweep: the ladder's LRs and the smoothed losses (same length)."""
    lr = np.asarray(lrs, dtype=np.float64)
    loss = np.asarray(smoothed, dtype=np.float64)
    if diverged:  # the last point is the blow-up, not part of the curve's shape
        lr, loss = lr[:-1], loss[:-1]
    finite = np.isfinite(loss)
    lr, loss = lr[finite], loss[finite]
    if len(loss) < 5:
        return Suggestions(None, None, None, None)
    at_min = float(lr[int(np.argmin(loss))])
    skip = max(1, len(loss) // 10)
    grad = np.gradient(loss[skip:], np.log10(lr[skip:])) if len(loss) - skip >= 2 else None
    steepest = float(lr[skip + int(np.argmin(grad))]) if grad is not None else None
    first, last = _longest_decreasing_span(loss)
    valley = float(lr[(first + last) // 2]) if last > first else None
    return Suggestions(steepest, at_min / 10.0, valley, at_min)


def combine(runs: Sequence[Suggestions]) -> dict[str, dict[str, Any]]:
    """Across repeats: per suggestion the median, the log10 spread (max - min of log10, in
    decades) and how many repeats gave one."""
    out: dict[str, dict[str, Any]] = {}
    for key in KEYS:
        values = [getattr(r, key) for r in runs if getattr(r, key) is not None]
        logs = [math.log10(v) for v in values]
        out[key] = {
            "median": 10 ** statistics.median(logs) if logs else None,
            "log10_spread": (max(logs) - min(logs)) if logs else None,
            "n": len(values),
        }
    return out


def bounds_for_role(role: str, center: float, at_min: float | None) -> tuple[float, float]:
    """Search bounds (log scale) for a rate parameter from the suggested centre LR c:

    - start (initial LR of a decay, or a constant LR): [c / 3, 3c], a decade around c;
    - peak (top of a cycle or end of a warm-up, which warm-up and annealing make safe at a
      higher LR): [c, min(10c, lr_at_minimum)], or [c / 3, 3c] if that is narrower than 2x;
    - base (bottom of a cycle, Smith's max_lr / 3 to / 30): [c / 30, c / 3].
    """
    if role == "base":
        return center / 30.0, center / 3.0
    if role == "peak":
        high = 10.0 * center if at_min is None else min(10.0 * center, at_min)
        if high >= 2.0 * center:
            return center, high
    return center / 3.0, 3.0 * center


def family_bounds(s: Suggestions) -> dict[str, dict[str, dict[str, Any]]]:
    """Per family, per rate parameter with a range-test role: {"low", "high", "log": True}.
    Empty when the sweep gave no usable suggestion."""
    center = s.center
    if center is None:
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in names():
        for p in param_specs(registry.get(name)):
            if p.meta.role is not None:
                low, high = bounds_for_role(p.meta.role, center, s.lr_at_minimum)
                out.setdefault(name, {})[p.name] = {"low": low, "high": high, "log": True}
    return out
