"""Piecewise schedules given as knots: constant steps or straight lines between knots."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from lrsearch.schedules.base import Family, Timeline, param, register


@register
@dataclass(frozen=True, kw_only=True)
class Piecewise(Family):
    """Knots at epochs 0 < b_1 < ... < b_n (boundaries_epochs) with values v_0..v_n.

    constant: v_0 before b_1, and v_i from boundary b_i on: the change happens AT the boundary
    (the first step of epoch b_i for a whole b_i; unlike Keras PiecewiseConstantDecay, which
    changes one step after it). linear: straight lines through (0, v_0), (b_1, v_1), ...,
    (b_n, v_n), then v_n. Boundaries become steps with round(b * spe).
    """

    name = "piecewise"
    formula = (
        "constant: v_i for B_i <= s < B_(i+1) (B_0 = 0); linear: "
        "v_i + (v_(i+1) - v_i) * (s - B_i) / (B_(i+1) - B_i) between knots, v_n after"
    )
    boundaries_epochs: tuple[float, ...] = param(
        description="Epochs where the LR changes (strictly increasing, > 0).", gt=0.0
    )
    values: tuple[float, ...] = param(description="LRs: one more than boundaries.", gt=0.0)
    interpolation: str = param(
        "constant", description="Steps or straight lines.", choices=("constant", "linear")
    )

    def check_params(self) -> None:
        b, v = self.boundaries_epochs, self.values
        if len(v) != len(b) + 1:
            raise self.fail(
                "values",
                "must have one more entry than `boundaries_epochs`",
                values=list(v),
                boundaries_epochs=list(b),
            )
        if any(later <= earlier for earlier, later in itertools.pairwise(b)):
            raise self.fail(
                "boundaries_epochs", "must be strictly increasing", boundaries_epochs=list(b)
            )

    def knots(self, t: Timeline) -> list[int]:
        """Knot positions in steps, starting with 0."""
        return [0, *(t.steps(b) for b in self.boundaries_epochs)]

    def check_timeline(self, t: Timeline) -> None:
        knots = self.knots(t)
        if any(later <= earlier for earlier, later in itertools.pairwise(knots)):
            raise self.fail(
                "boundaries_epochs",
                "must fall on distinct steps after step 0 "
                f"with {t.steps_per_epoch} steps per epoch",
                boundaries_epochs=list(self.boundaries_epochs),
            )
        if knots[-1] >= t.total_steps:
            raise self.fail(
                "boundaries_epochs",
                "must all be < `epochs`",
                boundaries_epochs=list(self.boundaries_epochs),
                epochs=t.epochs,
            )

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        knots, v = self.knots(t), self.values
        out = s * 0.0 + v[0]
        for i in range(1, len(knots)):
            if self.interpolation == "constant":
                piece: Any = v[i]
            else:
                a, b = knots[i - 1], knots[i]
                piece = v[i - 1] + (v[i] - v[i - 1]) * (xp.minimum(s, b) - a) / (b - a)
                out = xp.where(s >= a, piece, out)
                piece = v[i]
            out = xp.where(s >= knots[i], piece, out)
        return out
