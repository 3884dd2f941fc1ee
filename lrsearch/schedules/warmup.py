"""Warm-up shaped schedules: triangle, warmup-stable-decay, and seed 002's ramp-up/exp-decay."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lrsearch.schedules.base import (
    Family,
    SearchRange,
    Timeline,
    param,
    register,
    round_half_up,
)
from lrsearch.schedules.cosine import linear_ramp
from lrsearch.schedules.decay import rate_param

FRACTION = SearchRange(0.0, 0.3)


@register
@dataclass(frozen=True, kw_only=True)
class Triangle(Family):
    """Linear warm-up start_lr -> peak_lr over W = round(warmup_epochs * spe) steps, then linear
    decay peak_lr -> end_lr reaching end_lr at s = S (the BERT-style schedule)."""

    name = "triangle"
    formula = (
        "s < W: start_lr + (peak_lr - start_lr) * s / W; "
        "else peak_lr + (end_lr - peak_lr) * (s - W) / (S - W)"
    )
    peak_lr: float = rate_param(0.1, "LR at the top of the triangle.", role="peak")
    warmup_epochs: float = param(
        1.0,
        description="Length of the rising side.",
        ge=0.0,
        search=SearchRange(0.0, 0.3, per_epochs=True),
        lt_epochs=True,
    )
    start_lr: float = param(0.0, description="LR at step 0.", ge=0.0, below="peak_lr")
    end_lr: float = param(0.0, description="LR reached at s = S.", ge=0.0, below="peak_lr")

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        W = t.steps(self.warmup_epochs)
        up = linear_ramp(self.start_lr, self.peak_lr, s, max(W, 1))
        down = linear_ramp(self.peak_lr, self.end_lr, s - W, float(t.total_steps - W))
        return xp.where(s < W, up, down)


@register
@dataclass(frozen=True, kw_only=True)
class WarmupStableDecay(Family):
    """Warmup-stable-decay as HF transformers' `get_wsd_schedule` (linear warm-up,
    num_cycles=0.5): W = round(warmup_frac * S), D = round(decay_frac * S), H = S - W - D.
    The factor f below multiplies peak_lr."""

    name = "wsd"
    formula = (
        "s < W: m + (1 - m) * s / W; s < W + H: 1; s < W + H + D: m + (1 - m) * g(p) "
        "with p = (s - W - H) / D and g = 1 - p | (1 + cos(pi * p)) / 2 | 1 - sqrt(p); "
        "then m (m = min_lr_ratio)"
    )
    peak_lr: float = rate_param(0.01, "LR of the stable phase.", role="peak")
    warmup_frac: float = param(
        0.05,
        description="Fraction of training spent warming up.",
        ge=0.0,
        lt=1.0,
        search=SearchRange(0.0, 0.2),
    )
    decay_frac: float = param(
        0.2,
        description="Fraction of training spent decaying.",
        gt=0.0,
        le=1.0,
        search=SearchRange(0.05, 0.5),
    )
    decay_shape: str = param(
        "cosine", description="Shape of the decay phase.", choices=("linear", "cosine", "1-sqrt")
    )
    min_lr_ratio: float = param(
        0.0,
        description="Floor of the LR as a fraction of peak_lr.",
        ge=0.0,
        lt=1.0,
        search=SearchRange(0.0, 0.1),
    )

    def check_params(self) -> None:
        if self.warmup_frac + self.decay_frac > 1.0:
            raise self.fail(
                "decay_frac",
                "must be <= 1 - `warmup_frac`",
                warmup_frac=self.warmup_frac,
                decay_frac=self.decay_frac,
            )

    def phases(self, t: Timeline) -> tuple[int, int, int]:
        """(W, H, D) in steps."""
        S = t.total_steps
        W = round_half_up(self.warmup_frac * S)
        D = round_half_up(self.decay_frac * S)
        return W, max(S - W - D, 0), D

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        W, H, D = self.phases(t)
        m = self.min_lr_ratio
        warm = m + (1.0 - m) * s / max(W, 1)
        p = xp.minimum(xp.maximum(s - W - H, 0.0) / max(D, 1), 1.0)
        if self.decay_shape == "linear":
            g = 1.0 - p
        elif self.decay_shape == "cosine":
            g = 0.5 * (1.0 + xp.cos(math.pi * p))
        else:
            g = 1.0 - xp.sqrt(p)
        factor = xp.where(s < W, warm, xp.where(s < W + H, 1.0, m + (1.0 - m) * g))
        factor = xp.where(s < W + H + D, factor, m)
        return self.peak_lr * factor


@register
@dataclass(frozen=True, kw_only=True)
class RampupExp(Family):
    """Seed 002's "one cycle": linear ramp-up per epoch, a sustain plateau, then exponential decay
    towards min_lr (per-epoch)."""

    name = "rampup_exp"
    formula = (
        "e < R: start_lr + (max_lr - start_lr) * e / R; e < R + H: max_lr; "
        "else (max_lr - min_lr) * exp_decay ** (e - R - H) + min_lr"
    )
    start_lr: float = param(
        1e-4,
        description="LR in epoch 0.",
        gt=0.0,
        below="max_lr",
        search=SearchRange(1e-6, 1e-2, log=True),
        role="base",
    )
    max_lr: float = rate_param(1e-3, "LR at the top of the ramp.", role="peak")
    min_lr: float = param(1e-5, description="Floor the decay approaches.", ge=0.0, below="max_lr")
    rampup_epochs: int = param(
        5,
        description="R: epochs of linear ramp-up.",
        ge=0,
        search=SearchRange(0.0, 0.3, per_epochs=True),
    )
    sustain_epochs: int = param(
        0,
        description="H: epochs held at max_lr.",
        ge=0,
        search=SearchRange(0.0, 0.3, per_epochs=True),
    )
    exp_decay: float = param(
        0.8,
        description="Factor per epoch of the decay phase.",
        gt=0.0,
        le=1.0,
        search=SearchRange(0.5, 0.99),
    )

    def check_timeline(self, t: Timeline) -> None:
        if self.rampup_epochs + self.sustain_epochs >= t.epochs:
            raise self.fail(
                "sustain_epochs",
                "plus `rampup_epochs` must be < `epochs`",
                rampup_epochs=self.rampup_epochs,
                sustain_epochs=self.sustain_epochs,
                epochs=t.epochs,
            )

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        e = t.epoch(s, xp)
        R, H = float(self.rampup_epochs), float(self.sustain_epochs)
        ramp = linear_ramp(self.start_lr, self.max_lr, e, max(R, 1.0))
        after = xp.maximum(e - R - H, 0.0)
        decay = (self.max_lr - self.min_lr) * xp.power(self.exp_decay, after) + self.min_lr
        return xp.where(e < R, ramp, xp.where(e < R + H, self.max_lr, decay))
