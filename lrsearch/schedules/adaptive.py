"""Adaptive schedules: the LR reacts to a monitored metric during training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lrsearch.schedules.base import Family, SearchRange, Timeline, param, register
from lrsearch.schedules.decay import rate_param


@register
@dataclass(frozen=True, kw_only=True)
class ReduceOnPlateau(Family):
    """Keras `ReduceLROnPlateau` semantics: start at lr0; when `monitor` has not improved by more
    than min_delta for `patience` epochs, multiply the LR by `factor` (not below min_lr), then wait
    `cooldown` epochs. Its real curve is only known after training (the recorded LR);
    `schedule()` gives the LR before any reduction, lr0, which is an upper bound."""

    name = "reduce_on_plateau"
    formula = "lr0, times factor after each plateau of `patience` epochs (adaptive)"
    adaptive = True
    lr0: float = rate_param(0.1, "Initial learning rate.")
    factor: float = param(
        0.1,
        description="Multiplier applied on a plateau.",
        gt=0.0,
        lt=1.0,
        search=SearchRange(0.1, 0.7),
    )
    patience: int = param(
        5,
        description="Epochs without improvement before reducing.",
        ge=0,
        search=SearchRange(0.05, 0.3, per_epochs=True),
    )
    min_delta: float = param(
        1e-4, description="Smallest change that counts as improvement.", ge=0.0
    )
    cooldown: int = param(0, description="Epochs to wait after a reduction.", ge=0)
    min_lr: float = param(0.0, description="The LR never goes below this.", ge=0.0, below="lr0")
    monitor: str = param(
        "val_loss",
        description="Metric watched for plateaus.",
        choices=("val_loss", "loss", "val_accuracy", "accuracy"),
    )

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        return s * 0.0 + self.lr0
