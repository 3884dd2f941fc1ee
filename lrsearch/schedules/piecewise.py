"""Piecewise schedules given as knots: constant steps or straight lines between knots."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from lrsearch.schedules.base import Family, Timeline, param, register

# The Keras form evaluates every knot at every training step, so a schedule's cost grows with
# its knots: 1000 boundaries are enough for an LR per epoch over a 1000-epoch training.
MAX_BOUNDARIES = 1000


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
        description="Epochs where the LR changes (strictly increasing, > 0).",
        gt=0.0,
        max_items=MAX_BOUNDARIES,
    )
    values: tuple[float, ...] = param(
        description="LRs: one more than boundaries.", gt=0.0, max_items=MAX_BOUNDARIES + 1
    )
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

    def pieces(self) -> int:
        return len(self.values)

    def schedule(self, s: Any, t: Timeline, xp: Any) -> Any:
        if xp is np:  # curves and previews: O(steps * log(knots)) instead of steps * knots
            return self.indexed(np.asarray(s, dtype=np.float64), t)
        return self.unrolled(s, t, xp)

    def indexed(self, s: np.ndarray, t: Timeline) -> np.ndarray:
        """The formula with each step's piece found by binary search; the same arithmetic as
        `unrolled`, so the values are identical (a test compares them bit for bit)."""
        knots = np.asarray(self.knots(t), dtype=np.float64)
        v = np.asarray(self.values, dtype=np.float64)
        i = np.searchsorted(knots, s, side="right") - 1  # knots[i] <= s < knots[i + 1]
        if self.interpolation == "constant":
            return v[np.maximum(i, 0)] + s * 0.0
        j = np.clip(i, 0, len(knots) - 2)
        a, b = knots[j], knots[j + 1]
        line = v[j] + (v[j + 1] - v[j]) * (np.minimum(s, b) - a) / (b - a)
        return np.where(s >= knots[-1], v[-1], np.where(s >= a, line, v[0]))

    def unrolled(self, s: Any, t: Timeline, xp: Any) -> Any:
        """The formula as one `where` per knot: what the Keras schedule computes (keras.ops
        has no binary search over a scalar step)."""
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
