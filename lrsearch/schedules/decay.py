"""Monotone decays: constant, time-based, step, exponential, hold-then-exponential, polynomial.

Per-epoch families use e = floor(s / spe); the LR changes only at epoch boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lrsearch.schedules.base import Family, SearchRange, Timeline, param, register

RATE = SearchRange(1e-4, 1.0, log=True)


def rate_param(default: float, description: str, **kw: Any) -> Any:
    """A learning rate: > 0, searched on a log scale from 1e-4 to 1 unless told otherwise."""
    kw.setdefault("search", RATE)
    kw.setdefault("role", "start")
    return param(default, description=description, gt=0.0, **kw)


@register
@dataclass(frozen=True, kw_only=True)
class Constant(Family):
    """The same LR at every step."""

    name = "constant"
    formula = "lr"
    lr: float = rate_param(0.01, "The learning rate.")

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        return s * 0.0 + self.lr


@register
@dataclass(frozen=True, kw_only=True)
class TimeDecay(Family):
    """Inverse-time decay; Keras `InverseTimeDecay(lr0, spe, k, staircase=per_epoch)`."""

    name = "time_decay"
    formula = "lr0 / (1 + k * e)"
    lr0: float = rate_param(0.1, "Initial learning rate.")
    decay_rate: float = param(
        0.01, description="k: decay per epoch.", ge=0.0, search=SearchRange(1e-4, 1.0, log=True)
    )
    per_epoch: bool = param(True, description="Change the LR only at epoch boundaries.")

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        return self.lr0 / (1.0 + self.decay_rate * t.epoch(s, xp, self.per_epoch))


@register
@dataclass(frozen=True, kw_only=True)
class StepDecay(Family):
    """Multiply by `drop` every `epochs_drop` epochs; the first drop is AT epoch `epochs_drop`
    (PyTorch `StepLR(step_size=epochs_drop, gamma=drop)` stepped once per epoch)."""

    name = "step_decay"
    formula = "lr0 * drop ** floor(e / epochs_drop)"
    lr0: float = rate_param(0.1, "Initial learning rate.")
    drop: float = param(
        0.5,
        description="Factor applied at each drop.",
        gt=0.0,
        lt=1.0,
        search=SearchRange(0.1, 0.9),
    )
    epochs_drop: int = param(
        10,
        description="Epochs between drops.",
        ge=1,
        search=SearchRange(0.05, 0.5, per_epochs=True),
    )

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        drops = xp.floor(t.epoch(s, xp) / self.epochs_drop)
        return self.lr0 * xp.power(self.drop, drops)


@register
@dataclass(frozen=True, kw_only=True)
class Exponential(Family):
    """Exponential decay; Keras `ExponentialDecay(lr0, spe, exp(-k), staircase=per_epoch)`."""

    name = "exponential"
    formula = "lr0 * exp(-k * e)"
    lr0: float = rate_param(0.1, "Initial learning rate.")
    k: float = param(
        0.1,
        description="Decay constant per epoch.",
        ge=0.0,
        search=SearchRange(1e-3, 1.0, log=True),
    )
    per_epoch: bool = param(True, description="Change the LR only at epoch boundaries.")

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        return self.lr0 * xp.exp(-self.k * t.epoch(s, xp, self.per_epoch))


@register
@dataclass(frozen=True, kw_only=True)
class HoldExponential(Family):
    """Hold lr0 for `hold_epochs` epochs, then decay exponentially (continuous at the boundary,
    unlike the seed snippet that jumps to lr0*exp(-k*hold))."""

    name = "hold_exponential"
    formula = "lr0 if e < hold_epochs else lr0 * exp(-k * (e - hold_epochs))"
    lr0: float = rate_param(0.1, "Initial learning rate.")
    hold_epochs: int = param(
        10,
        description="Epochs at lr0 before the decay starts.",
        ge=0,
        search=SearchRange(0.0, 0.5, per_epochs=True),
    )
    k: float = param(
        0.1,
        description="Decay constant per epoch.",
        ge=0.0,
        search=SearchRange(1e-3, 1.0, log=True),
    )

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        decayed = xp.maximum(t.epoch(s, xp) - self.hold_epochs, 0.0)
        return self.lr0 * xp.exp(-self.k * decayed)


@dataclass(frozen=True, kw_only=True)
class DecayToEnd(Family):
    """Shared parameters of the decays that reach end_lr at s = S (linear, polynomial)."""

    lr0: float = rate_param(0.1, "Initial learning rate.")
    end_lr: float = param(
        0.0, description="LR reached at the end of training.", ge=0.0, below="lr0"
    )

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        """(lr0 - end_lr) * (1 - min(s, S) / S) ** power + end_lr; `linear` has power 1."""
        S = float(t.total_steps)
        power = getattr(self, "power", 1.0)
        return (self.lr0 - self.end_lr) * xp.power(1.0 - xp.minimum(s, S) / S,
                                                   power) + self.end_lr


@register
@dataclass(frozen=True, kw_only=True)
class Polynomial(DecayToEnd):
    """Polynomial decay to end_lr at s = S; Keras `PolynomialDecay(lr0, S, end_lr, power)`."""

    name = "polynomial"
    formula = "(lr0 - end_lr) * (1 - min(s, S) / S) ** power + end_lr"
    power: float = param(
        2.0,
        description="Exponent of the decay (1 is linear).",
        gt=0.0,
        search=SearchRange(0.5, 5.0),
    )


@register
@dataclass(frozen=True, kw_only=True)
class Linear(DecayToEnd):
    """Linear decay to end_lr at s = S: `polynomial` with power 1."""

    name = "linear"
    formula = "(lr0 - end_lr) * (1 - min(s, S) / S) + end_lr"
