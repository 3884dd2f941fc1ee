"""The LR ladder, loss smoothing and divergence rule of the range test (pure numpy)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lrsearch.errors import RangeTestError

Mode = Literal["exp", "linear"]


@dataclass(frozen=True)
class SweepSettings:
    """What to sweep and when to stop. Validated on construction."""

    min_lr: float = 1e-7
    max_lr: float = 10.0
    num_iter: int = 100
    mode: Mode = "exp"
    diverge_threshold: float = 4.0
    beta: float = 0.98

    def __post_init__(self) -> None:
        def bad(name: str, requirement: str) -> RangeTestError:
            value = getattr(self, name)
            return RangeTestError(f"Argument `{name}` {requirement}. Received: {name}={value!r}",
                                  field=name)

        for name in ("min_lr", "max_lr", "diverge_threshold", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad(name, "must be a number")
            if not math.isfinite(value):
                raise bad(name, "must be finite")
        if self.min_lr <= 0:
            raise bad("min_lr", "must be > 0")
        if self.max_lr <= self.min_lr:
            raise RangeTestError(
                f"Argument `max_lr` must be > `min_lr`. Received: max_lr={self.max_lr!r}, "
                f"min_lr={self.min_lr!r}", field="max_lr")
        if isinstance(self.num_iter, bool) or not isinstance(self.num_iter, int):
            raise bad("num_iter", "must be an integer")
        if self.num_iter < 5:
            raise bad("num_iter", "must be >= 5")
        if self.mode not in ("exp", "linear"):
            raise bad("mode", "must be exp or linear")
        if self.diverge_threshold <= 1:
            raise bad("diverge_threshold", "must be > 1")
        if not 0 <= self.beta < 1:
            raise bad("beta", "must be in [0, 1)")


def ladder(min_lr: float, max_lr: float, num_iter: int, mode: Mode = "exp") -> np.ndarray:
    """num_iter learning rates from min_lr to max_lr, both endpoints included.

    exp: min_lr * (max_lr / min_lr) ** (i / (num_iter - 1)); linear: evenly spaced.
    """
    SweepSettings(min_lr, max_lr, num_iter, mode)
    i = np.arange(num_iter, dtype=np.float64) / (num_iter - 1)
    out = min_lr * (max_lr / min_lr) ** i if mode == "exp" else min_lr + (max_lr - min_lr) * i
    out[0], out[-1] = min_lr, max_lr  # exact endpoints, whatever the rounding
    return out


def smooth(losses: np.ndarray, beta: float = 0.98) -> np.ndarray:
    """Bias-corrected exponential moving average:
    avg_i = beta * avg_(i-1) + (1 - beta) * loss_i, smoothed_i = avg_i / (1 - beta ** (i + 1))."""
    out = np.empty(len(losses), dtype=np.float64)
    avg = 0.0
    for i, loss in enumerate(np.asarray(losses, dtype=np.float64)):
        avg = beta * avg + (1.0 - beta) * loss
        out[i] = avg / (1.0 - beta ** (i + 1))
    return out


@dataclass
class SweepTracker:
    """Feeds raw losses one at a time; says when the sweep must stop.

    The sweep stops when the smoothed loss is not finite or exceeds diverge_threshold times the
    best smoothed loss so far. The point that triggered the stop is kept in the curve.
    """

    beta: float = 0.98
    diverge_threshold: float = 4.0
    raw: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    best: float = math.inf
    diverged: bool = False
    _avg: float = 0.0

    def add(self, loss: float) -> bool:
        """Record one raw batch loss; return False when the sweep must stop now."""
        self.raw.append(float(loss))
        self._avg = self.beta * self._avg + (1.0 - self.beta) * float(loss)
        value = self._avg / (1.0 - self.beta ** len(self.raw))
        self.smoothed.append(value)
        if not math.isfinite(value) or value > self.diverge_threshold * self.best:
            self.diverged = True
            return False
        self.best = min(self.best, value)
        return True
