"""Hypothesis strategies: random valid parameters for any registered family."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from lrsearch.errors import ScheduleError
from lrsearch.schedules import validate
from lrsearch.schedules.search import Choice, Fixed, space

RELATIVE_DURATIONS = {
    "warmup_epochs",
    "first_cycle_epochs",
    "step_size_up_epochs",
    "rampup_epochs",
    "sustain_epochs",
    "hold_epochs",
    "epochs_drop",
    "patience",
}


def _dimension(d: Any) -> st.SearchStrategy[Any]:
    if isinstance(d, Fixed):
        return st.just(d.value)
    if isinstance(d, Choice):
        return st.sampled_from(d.choices)
    if d.integer:
        return st.integers(int(d.low), int(d.high))
    if d.log:
        return st.floats(math.log(d.low), math.log(d.high)).map(math.exp)
    return st.floats(d.low, d.high)


@st.composite
def piecewise_params(draw: st.DrawFn, epochs: int) -> dict[str, Any]:
    n = draw(st.integers(0, min(3, epochs - 1)))
    bounds = sorted(draw(st.sets(st.integers(1, epochs - 1), min_size=n, max_size=n)))
    values = draw(st.lists(st.floats(1e-4, 1.0), min_size=n + 1, max_size=n + 1))
    return {
        "boundaries_epochs": bounds,
        "values": values,
        "interpolation": draw(st.sampled_from(["constant", "linear"])),
    }


@st.composite
def family_case(draw: st.DrawFn, family: str) -> tuple[dict[str, Any], int, int]:
    """(params, steps_per_epoch, epochs) valid for `family`."""
    spe = draw(st.integers(1, 12))
    epochs = draw(st.integers(2, 15))
    if family == "piecewise":
        params = draw(piecewise_params(epochs))
    else:
        dims = space(family, epochs=epochs)
        params = {name: draw(_dimension(d)) for name, d in dims.items()}
    try:
        validate(family, params, steps_per_epoch=spe, epochs=epochs)
    except ScheduleError:
        # Some random combinations break a cross-parameter rule (base_lr < max_lr, ...).
        from hypothesis import assume

        assume(False)
    return params, spe, epochs
