"""The pure parts of the range test: ladder, smoothing, divergence, suggestions, bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrsearch.errors import RangeTestError
from lrsearch.range_test import SweepSettings, SweepTracker, combine, family_bounds, ladder, smooth
from lrsearch.range_test.suggest import Suggestions, suggest
from lrsearch.schedules.search import space


def test_exponential_ladder_includes_both_endpoints() -> None:
    lrs = ladder(1e-6, 1.0, 7)
    assert lrs[0] == 1e-6 and lrs[-1] == 1.0
    assert np.allclose(np.diff(np.log10(lrs)), 1.0)


def test_linear_ladder_includes_both_endpoints() -> None:
    assert ladder(0.1, 0.5, 5, "linear") == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_smoothing_is_bias_corrected_ema() -> None:
    losses = np.array([2.0, 1.0, 4.0])
    beta = 0.9
    avg, expected = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        expected.append(avg / (1 - beta ** (i + 1)))
    assert smooth(losses, beta) == pytest.approx(expected)
    assert smooth(np.array([3.0]))[0] == pytest.approx(3.0)  # no bias towards 0


def test_tracker_stops_when_smoothed_loss_exceeds_threshold_times_best() -> None:
    t = SweepTracker(beta=0.0, diverge_threshold=4.0)  # beta 0: smoothed == raw
    assert all(t.add(v) for v in [2.0, 1.0, 3.9])
    assert not t.add(4.1)
    assert t.diverged and t.raw == [2.0, 1.0, 3.9, 4.1]


def test_tracker_stops_on_nan() -> None:
    t = SweepTracker()
    assert t.add(1.0)
    assert not t.add(math.nan)
    assert t.diverged


@pytest.mark.parametrize("kwargs,field", [
    ({"min_lr": 0.0}, "min_lr"), ({"min_lr": 1.0, "max_lr": 0.5}, "max_lr"),
    ({"num_iter": 3}, "num_iter"), ({"mode": "log"}, "mode"),
    ({"diverge_threshold": 1.0}, "diverge_threshold"), ({"max_lr": math.inf}, "max_lr"),
    ({"beta": 1.0}, "beta"),
])
def test_bad_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(RangeTestError) as info:
        SweepSettings(**kwargs)
    assert info.value.field == field and field in str(info.value)


def synthetic_curve() -> tuple[np.ndarray, np.ndarray]:
    """A loss that falls fastest around 1e-3, bottoms at 1e-1 and then explodes."""
    lrs = ladder(1e-6, 10.0, 120)
    x = np.log10(lrs)
    loss = 2.0 - 1.5 / (1 + np.exp(-3 * (x + 3))) + np.where(x > -1, (x + 1) ** 2 * 3, 0.0)
    return lrs, loss


def test_suggestions_on_a_known_curve() -> None:
    lrs, loss = synthetic_curve()
    s = suggest(lrs, loss)
    assert s.steepest == pytest.approx(1e-3, rel=0.25)
    assert s.lr_at_minimum == pytest.approx(0.1, rel=0.3)
    assert s.minimum_div10 == pytest.approx(s.lr_at_minimum / 10)
    assert s.valley is not None and 1e-6 < s.valley < s.lr_at_minimum


def test_short_curve_gives_no_suggestion() -> None:
    assert suggest([1e-3, 1e-2, 1e-1], [1.0, 0.9, 0.8]) == Suggestions(None, None, None, None)


def test_combine_reports_median_and_log10_spread() -> None:
    runs = [Suggestions(1e-3, 1e-2, 1e-3, 0.1), Suggestions(1e-2, 1e-2, 1e-2, 0.1),
            Suggestions(1e-4, None, 1e-4, 0.1)]
    c = combine(runs)
    assert c["steepest"]["median"] == pytest.approx(1e-3)
    assert c["steepest"]["log10_spread"] == pytest.approx(2.0)
    assert c["minimum_div10"]["n"] == 2


def test_family_bounds_are_valid_search_spaces() -> None:
    lrs, loss = synthetic_curve()
    bounds = family_bounds(suggest(lrs, loss))
    assert {"constant", "one_cycle", "cyclical", "cosine"} <= set(bounds)
    assert bounds["cyclical"]["base_lr"]["high"] < bounds["cyclical"]["max_lr"]["low"] * 1.0001
    for family, overrides in bounds.items():
        space(family, overrides, epochs=10)  # each is accepted by the search space
