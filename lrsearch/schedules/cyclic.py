"""Cyclical schedules: Smith's one-cycle policy and cyclical learning rates (CLR)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lrsearch.schedules.base import Family, SearchRange, Timeline, param, register
from lrsearch.schedules.decay import rate_param


def anneal(kind: str, start: float, end: float, pct: Any, xp: Any) -> Any:
    """Move from start to end as pct goes 0 -> 1: cosine (`cos`) or straight (`linear`)."""
    if kind == "cos":
        return end + (start - end) / 2.0 * (xp.cos(math.pi * pct) + 1.0)
    return (end - start) * pct + start


@register
@dataclass(frozen=True, kw_only=True)
class OneCycle(Family):
    """The one-cycle policy exactly as PyTorch `OneCycleLR(max_lr, total_steps=S, pct_start,
    anneal_strategy, div_factor, final_div_factor, three_phase)`: from max_lr / div_factor up to
    max_lr over the first pct_start * S - 1 steps, then down to max_lr / div_factor /
    final_div_factor at s = S - 1 (three_phase: back to the initial LR first, then down).
    With cycle_momentum the momentum moves inversely between max_momentum and base_momentum."""

    name = "one_cycle"
    formula = (
        "phases end at a1 = pct_start*S - 1 [, a2 = 2*pct_start*S - 2], S - 1; "
        "lr anneals max_lr/div_factor -> max_lr [-> max_lr/div_factor] -> "
        "max_lr/(div_factor*final_div_factor) within each phase"
    )
    max_lr: float = rate_param(0.1, "Peak learning rate.", role="peak")
    pct_start: float = param(
        0.3,
        description="Fraction of the cycle spent rising.",
        gt=0.0,
        lt=1.0,
        search=SearchRange(0.1, 0.5),
    )
    div_factor: float = param(
        25.0,
        description="Initial LR = max_lr / div_factor.",
        gt=0.0,
        search=SearchRange(5.0, 100.0, log=True),
    )
    final_div_factor: float = param(
        1e4,
        description="Final LR = initial LR / final_div_factor.",
        gt=0.0,
        search=SearchRange(1e2, 1e5, log=True),
    )
    anneal: str = param("cos", description="Annealing shape.", choices=("cos", "linear"))
    three_phase: bool = param(False, description="Add a phase back to the initial LR.")
    cycle_momentum: bool = param(
        False, description="Cycle momentum (or Adam beta_1) inversely to the LR."
    )
    base_momentum: float = param(
        0.85, description="Momentum at the LR peak.", ge=0.0, lt=1.0, below="max_momentum"
    )
    max_momentum: float = param(0.95, description="Momentum at the LR ends.", gt=0.0, lt=1.0)

    def check_timeline(self, t: Timeline) -> None:
        ends = self.phase_ends(t)
        previous = 0.0
        for end in ends:
            if not end > previous:
                raise self.fail(
                    "pct_start",
                    f"leaves a phase with no steps in {t.total_steps} total steps",
                    pct_start=self.pct_start,
                    three_phase=self.three_phase,
                    total_steps=t.total_steps,
                )
            previous = end

    def phase_ends(self, t: Timeline) -> list[float]:
        S = float(t.total_steps)
        if self.three_phase:
            return [self.pct_start * S - 1.0, 2.0 * self.pct_start * S - 2.0, S - 1.0]
        return [self.pct_start * S - 1.0, S - 1.0]

    def _cycled(self, s: Any, t: Timeline, xp: Any, points: list[float]) -> Any:
        """Anneal between `points` (one more than phases) phase by phase, as PyTorch does."""
        ends = self.phase_ends(t)
        out = anneal(
            self.anneal, points[-2], points[-1], (s - ends[-2]) / (ends[-1] - ends[-2]), xp
        )
        for i in reversed(range(len(ends) - 1)):
            begin = ends[i - 1] if i > 0 else 0.0
            inside = anneal(
                self.anneal, points[i], points[i + 1], (s - begin) / (ends[i] - begin), xp
            )
            out = xp.where(s <= ends[i], inside, out)
        return out

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        points = (
            [initial, self.max_lr, initial, final]
            if self.three_phase
            else [initial, self.max_lr, final]
        )
        return self._cycled(s, t, xp, points)

    def momentum(self, s: Any, t: Timeline, xp: Any) -> Any | None:
        if not self.cycle_momentum:
            return None
        hi, lo = self.max_momentum, self.base_momentum
        return self._cycled(s, t, xp, [hi, lo, hi, hi] if self.three_phase else [hi, lo, hi])


@register
@dataclass(frozen=True, kw_only=True)
class Cyclical(Family):
    """Cyclical learning rates exactly as PyTorch `CyclicLR(base_lr, max_lr, step_size_up,
    step_size_down, mode, gamma)` with the sizes converted to steps, stepped every batch."""

    name = "cyclical"
    formula = (
        "T = up + down; c = floor(1 + s/T); x = 1 + s/T - c; "
        "h = x/(up/T) if x <= up/T else (x - 1)/(up/T - 1); "
        "lr = base_lr + (max_lr - base_lr) * h * scale, scale = 1 | 1/2**(c-1) | gamma**s"
    )
    base_lr: float = param(
        1e-3,
        description="Bottom of the cycle.",
        gt=0.0,
        below="max_lr",
        search=SearchRange(1e-5, 1e-1, log=True),
        role="base",
    )
    max_lr: float = rate_param(1e-2, "Top of the cycle.", role="peak")
    step_size_up_epochs: float = param(
        2.0,
        description="Length of the rising half.",
        gt=0.0,
        search=SearchRange(0.05, 0.25, per_epochs=True),
    )
    step_size_down_epochs: float | None = param(
        None, description="Length of the falling half (default: the rising half's).", gt=0.0
    )
    mode: str = param(
        "triangular",
        description="Amplitude policy.",
        choices=("triangular", "triangular2", "exp_range"),
    )
    gamma: float = param(1.0, description="exp_range: amplitude factor per step.", gt=0.0, le=1.0)

    def sizes(self, t: Timeline) -> tuple[int, int]:
        up = t.steps(self.step_size_up_epochs)
        down_epochs = self.step_size_down_epochs
        down = up if down_epochs is None else t.steps(down_epochs)
        return up, down

    def check_timeline(self, t: Timeline) -> None:
        up, down = self.sizes(t)
        self.require_steps("step_size_up_epochs", up, t, self.step_size_up_epochs)
        if self.step_size_down_epochs is not None:
            self.require_steps("step_size_down_epochs", down, t, self.step_size_down_epochs)

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        up, down = self.sizes(t)
        total = float(up + down)
        ratio = up / total
        cycle = xp.floor(1.0 + s / total)
        x = 1.0 + s / total - cycle
        height = xp.where(x <= ratio, x / ratio, (x - 1.0) / (ratio - 1.0))
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = 1.0 / xp.power(2.0, cycle - 1.0)
        else:
            scale = xp.power(self.gamma, s)
        return self.base_lr + (self.max_lr - self.base_lr) * height * scale
