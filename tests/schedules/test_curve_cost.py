"""The work a schedule costs is known and bounded before it is done: sampled curves evaluate
only the steps shown, piecewise evaluation is a binary search (identical to the one-`where`-
per-knot form Keras runs), knots are capped, and a grid's size is counted without building it."""

from __future__ import annotations

import numpy as np
import pytest

from lrsearch.errors import ScheduleError
from lrsearch.schedules import (
    curve,
    evaluations,
    make,
    names,
    sample_steps,
    sampled_curve,
    validate,
)
from lrsearch.schedules.piecewise import MAX_BOUNDARIES, Piecewise
from lrsearch.schedules.search import grid, grid_size, space

# The one family without defaults for every parameter (as in test_properties, without Keras).
DEFAULTS = {"piecewise": {"boundaries_epochs": [1, 2], "values": [0.1, 0.05, 0.01]}}


@pytest.mark.parametrize("family", names())
@pytest.mark.parametrize("spe,epochs,points", [(7, 8, 1000), (250, 12, 300), (3, 8, 12)])
def test_a_sampled_curve_is_the_full_curve_at_the_sampled_steps(
        family: str, spe: int, epochs: int, points: int) -> None:
    params = DEFAULTS.get(family, {})
    steps, lrs = sampled_curve(family, params, steps_per_epoch=spe, epochs=epochs,
                               points=points)
    full = curve(family, params, steps_per_epoch=spe, epochs=epochs)
    assert len(steps) == min(points, spe * epochs)
    assert steps[0] == 0 and steps[-1] == len(full) - 1
    np.testing.assert_array_equal(lrs, full[steps])


def test_sample_steps_spreads_at_most_points_steps_keeping_both_ends() -> None:
    assert sample_steps(5, 10).tolist() == [0, 1, 2, 3, 4]
    steps = sample_steps(1_000_000, 1000)
    assert len(steps) == 1000 and steps[0] == 0 and steps[-1] == 999_999
    assert np.all(np.diff(steps) > 0)


@pytest.mark.parametrize("interpolation", ["constant", "linear"])
@pytest.mark.parametrize("seed", range(5))
def test_piecewise_binary_search_equals_the_keras_form_bit_for_bit(interpolation: str,
                                                                   seed: int) -> None:
    rng = np.random.default_rng(seed)
    spe, epochs = int(rng.integers(1, 9)), 40
    n = int(rng.integers(1, 30))
    boundaries = np.sort(rng.choice(np.arange(1, epochs * spe), n, replace=False)) / spe
    family, timeline = validate("piecewise", {
        "boundaries_epochs": boundaries.tolist(), "values": rng.uniform(1e-4, 1, n + 1).tolist(),
        "interpolation": interpolation}, steps_per_epoch=spe, epochs=epochs)
    s = np.arange(timeline.total_steps, dtype=np.float64)
    assert isinstance(family, Piecewise)
    np.testing.assert_array_equal(family.indexed(s, timeline), family.unrolled(s, timeline, np))


def test_evaluations_are_the_steps_shown_times_the_pieces() -> None:
    params = {"boundaries_epochs": [1, 2, 3], "values": [0.4, 0.3, 0.2, 0.1]}
    assert evaluations("piecewise", params, steps_per_epoch=100, epochs=10, points=50) == 200
    assert evaluations("piecewise", params, steps_per_epoch=2, epochs=10, points=50) == 80
    assert evaluations("cosine", {}, steps_per_epoch=100, epochs=10, points=1000) == 1000
    assert make("piecewise", params).pieces() == 4 and make("cosine", {}).pieces() == 1


def test_piecewise_knots_are_capped_by_the_family() -> None:
    def params(n: int) -> dict[str, list[float]]:
        return {"boundaries_epochs": [(i + 1) / 4 for i in range(n)],
                "values": [0.1] * (n + 1)}

    assert make("piecewise", params(MAX_BOUNDARIES)).pieces() == MAX_BOUNDARIES + 1
    with pytest.raises(ScheduleError) as info:
        make("piecewise", params(40_000))
    assert info.value.field == "boundaries_epochs"
    assert str(info.value) == ("piecewise: argument `boundaries_epochs` must have at most "
                               "1000 entries. Received: 40000 entries")
    with pytest.raises(ScheduleError, match="`values` must have at most 1001 entries"):
        make("piecewise", {"boundaries_epochs": [1.0], "values": [0.1] * 1002})


def test_a_space_without_ranges_is_checked_as_the_trials_would_build_it() -> None:
    with pytest.raises(ScheduleError) as info:
        space("piecewise", {"boundaries_epochs": {"value": [1, 2]},
                            "values": {"value": [0.1, 0.01]}}, epochs=10)
    assert info.value.field == "search_space.piecewise.values"
    ok = space("piecewise", {"boundaries_epochs": {"value": [1, 2]},
                             "values": {"value": [0.1, 0.01, 0.001]}}, epochs=10)
    assert set(ok) == {"boundaries_epochs", "values", "interpolation"}


def test_the_grid_is_counted_without_being_built() -> None:
    values = grid("cosine_restarts", {}, epochs=10, points=100)
    assert {len(v) for v in values.values()} == {100} and len(values) == 5
    assert grid_size(values) == 100 ** 5
    small = grid("one_cycle", {"max_lr": {"low": 0.01, "high": 1.0, "log": True},
                               "pct_start": {"value": 0.3}, "div_factor": {"value": 25.0},
                               "final_div_factor": {"value": 1e4}}, epochs=10, points=3)
    assert small == {"max_lr": pytest.approx([0.01, 0.1, 1.0]), "anneal": ["cos", "linear"]}
    assert grid_size(small) == 6 and grid_size({}) == 1
