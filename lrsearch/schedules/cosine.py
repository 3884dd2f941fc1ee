"""Cosine annealing, with optional linear warm-up, and SGDR warm restarts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lrsearch.schedules.base import Family, SearchRange, Timeline, param, register
from lrsearch.schedules.decay import rate_param

ALPHA = SearchRange(0.0, 0.2)


def linear_ramp(start: float, end: float, s: Any, length: float) -> Any:
    """start + (end - start) * s / length (length > 0)."""
    return start + (end - start) * s / length


@register
@dataclass(frozen=True, kw_only=True)
class Cosine(Family):
    """Linear warm-up from warmup_start_lr to peak_lr over W = round(warmup_epochs * spe) steps,
    then cosine decay to alpha * peak_lr over the remaining S - W steps.
    Keras `CosineDecay(warmup_start_lr, S - W, alpha, warmup_target=peak_lr, warmup_steps=W)`
    (W = 0: `CosineDecay(peak_lr, S, alpha)`)."""

    name = "cosine"
    formula = (
        "s < W: warmup_start_lr + (peak_lr - warmup_start_lr) * s / W; else "
        "peak_lr * ((1 - alpha) * (1 + cos(pi * min(s - W, S - W) / (S - W))) / 2 + alpha)"
    )
    peak_lr: float = rate_param(0.1, "LR at the end of the warm-up.", role="peak")
    alpha: float = param(
        0.0, description="Final LR as a fraction of peak_lr.", ge=0.0, lt=1.0, search=ALPHA
    )
    warmup_epochs: float = param(
        0.0,
        description="Length of the linear warm-up.",
        ge=0.0,
        search=SearchRange(0.0, 0.2, per_epochs=True),
        lt_epochs=True,
    )
    warmup_start_lr: float = param(
        0.0, description="LR at step 0 when warming up.", ge=0.0, below="peak_lr"
    )

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        W = t.steps(self.warmup_epochs)
        D = float(t.total_steps - W)
        warm = linear_ramp(self.warmup_start_lr, self.peak_lr, s, max(W, 1))
        done = xp.minimum(xp.maximum(s - W, 0.0), D) / D
        decay = self.peak_lr * (
            (1.0 - self.alpha) * 0.5 * (1.0 + xp.cos(math.pi * done)) + self.alpha
        )
        return xp.where(s < W, warm, decay)


@register
@dataclass(frozen=True, kw_only=True)
class CosineRestarts(Family):
    """SGDR: cosine cycles, the first F = round(first_cycle_epochs * spe) steps long, each next
    one t_mul times longer and m_mul times higher; Keras
    `CosineDecayRestarts(lr0, F, t_mul, m_mul, alpha)`. With t_mul = m_mul = 1 and alpha = 0 it
    is the snapshot-ensemble schedule lr0 / 2 * (cos(pi * (s mod F) / F) + 1)."""

    name = "cosine_restarts"
    formula = (
        "f = s / F; i = restart index, x = fraction of cycle i done; "
        "lr0 * ((1 - alpha) * m_mul**i * (1 + cos(pi * x)) / 2 + alpha)"
    )
    lr0: float = rate_param(0.1, "LR at the start of the first cycle.", role="peak")
    first_cycle_epochs: float = param(
        10.0,
        description="Length of the first cycle.",
        gt=0.0,
        search=SearchRange(0.1, 0.5, per_epochs=True),
    )
    t_mul: float = param(
        2.0,
        description="Each cycle is t_mul times longer than the last.",
        ge=1.0,
        search=SearchRange(1.0, 3.0),
    )
    m_mul: float = param(
        1.0,
        description="Each cycle starts m_mul times lower.",
        gt=0.0,
        le=1.0,
        search=SearchRange(0.5, 1.0),
    )
    alpha: float = param(
        0.0, description="Minimum LR as a fraction of lr0.", ge=0.0, lt=1.0, search=ALPHA
    )

    def check_timeline(self, t: Timeline) -> None:
        self.require_steps(
            "first_cycle_epochs", t.steps(self.first_cycle_epochs), t, self.first_cycle_epochs
        )

    def restart_index(self, f: Any, xp: Any) -> tuple[Any, Any]:
        """(i, x): the cycle index and the fraction of it done, at f = s / F cycles-of-F."""
        if self.t_mul == 1.0:
            i = xp.floor(f)
            return i, f - i
        t_mul = self.t_mul
        i = xp.floor(xp.log(1.0 - f * (1.0 - t_mul)) / math.log(t_mul))
        # log() can land a hair below a whole number exactly at a restart; the restart
        # happens when f reaches the cycle's start sum_{j<i+1} t_mul**j, so move up then.
        start_next = (1.0 - xp.power(t_mul, i + 1.0)) / (1.0 - t_mul)
        i = xp.where(f >= start_next * (1.0 - 1e-12), i + 1.0, i)
        start = (1.0 - xp.power(t_mul, i)) / (1.0 - t_mul)
        return i, xp.maximum(f - start, 0.0) / xp.power(t_mul, i)

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        i, x = self.restart_index(s / float(t.steps(self.first_cycle_epochs)), xp)
        cos = 0.5 * xp.power(self.m_mul, i) * (1.0 + xp.cos(math.pi * x))
        return self.lr0 * ((1.0 - self.alpha) * cos + self.alpha)
