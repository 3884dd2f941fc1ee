"""Learning-rate suggestions from a range-test curve, and search bounds per family (pure).

The suggestions are fastai's `lr_find` rules (fastai 2.8, `fastai.callback.schedule`), on the
curve fastai suggests from: the recorded LRs and smoothed losses with the first
`num_it // 10` points and the last 5 dropped, cut at the first NaN. On that curve:
- valley: fastai's `valley`. The longest strictly decreasing subsequence's length L ends at
  index e (the first e reaching the longest); s = e - L; the LR at s + int(L/3) + int(L/6).
- steepest: fastai's `steep`: the LR at the left end of the steepest fall of the loss against
  log(LR) between consecutive points.
- minimum_div10: fastai's `minimum`: the LR of the lowest loss, divided by 10.
- slide: fastai's `slide` (interval slide rule, lr_diff 15, threshold 0.005): walking left
  from the end, the LR at which the loss gradient 15 points apart first differs by at most
  0.005.
`lr_at_minimum` (the LR of the lowest smoothed loss on that curve) is kept as the upper limit
of sensible LRs. tests/range_test/test_fastai_suggestions.py checks every rule against
fastai's own values.
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

KEYS = ("steepest", "minimum_div10", "valley", "slide", "lr_at_minimum")
TRIM_END = 5  # fastai drops the last 5 points (the blow-up) ...
# ... and the first num_it // 10 (the smoothing is still warming up there).


@dataclass(frozen=True)
class Suggestions:
    """Suggested LRs (None where the curve is too short to tell)."""

    steepest: float | None
    minimum_div10: float | None
    valley: float | None
    lr_at_minimum: float | None
    slide: float | None = None

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


def trimmed(lrs: Sequence[float] | np.ndarray, smoothed: Sequence[float] | np.ndarray,
            num_it: int) -> tuple[np.ndarray, np.ndarray]:
    """The curve fastai suggests from: points num_it // 10 .. -5, cut at the first NaN."""
    lr = np.asarray(lrs, dtype=np.float64)[num_it // 10:-TRIM_END]
    loss = np.asarray(smoothed, dtype=np.float64)[num_it // 10:-TRIM_END]
    bad = np.flatnonzero(np.isnan(loss))
    if bad.size:
        lr, loss = lr[:bad[0]], loss[:bad[0]]
    return lr, loss


def valley_index(losses: np.ndarray) -> int | None:
    """fastai's `valley` index (see the module docstring); None for fewer than 2 points."""
    n = len(losses)
    if n < 2:
        return None
    # fastai's double loop, a row at a time: lds[i] = 1 + the longest run ending at a higher
    # earlier point; max_end moves to i only when lds[i] beats it (the first longest wins).
    lds = np.ones(n, dtype=np.int64)
    max_end = 0
    for i in range(1, n):
        higher = losses[:i] > losses[i]
        if higher.any():
            lds[i] = int(lds[:i][higher].max()) + 1
        if lds[max_end] < lds[i]:
            max_end = i
    max_start = max_end - int(lds[max_end])
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


def slide_lr(lrs: np.ndarray, losses: np.ndarray, lr_diff: int = 15, thresh: float = 0.005
             ) -> float | None:
    """fastai's `slide`: None when the curve is not longer than `lr_diff` points."""
    if len(losses) <= lr_diff or len(losses) < 2:
        return None
    grad = np.gradient(losses)
    r, left = -1, -1 - lr_diff
    found = lrs[left]
    while left >= -len(losses) and abs(grad[r] - grad[left]) > thresh:
        found = lrs[left]
        r -= 1
        left -= 1
    return float(found)


def suggest(lrs: Sequence[float] | np.ndarray, smoothed: Sequence[float] | np.ndarray,
            num_it: int | None = None) -> Suggestions:
    """fastai's suggestions from one sweep: the recorded LRs and smoothed losses (same length;
    a diverged sweep's last points included, as fastai records them) and the number of
    iterations the sweep was asked for (`num_it`, default the recorded length)."""
    lr, loss = trimmed(lrs, smoothed, len(lrs) if num_it is None else num_it)
    if len(loss) < 2 or not np.isfinite(loss).all():
        finite = np.isfinite(loss)
        lr, loss = lr[finite], loss[finite]
    if len(loss) < 2:
        return Suggestions(None, None, None, None)
    at_min = float(lr[int(np.argmin(loss))])
    grads = (loss[1:] - loss[:-1]) / (np.log(lr[1:]) - np.log(lr[:-1]))
    steepest = float(lr[int(np.argmin(grads))])
    index = valley_index(loss)
    valley = float(lr[index]) if index is not None else None
    return Suggestions(steepest, at_min / 10.0, valley, at_min, slide_lr(lr, loss))


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
