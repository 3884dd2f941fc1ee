"""Bad parameters raise ScheduleError (one library error type) naming the argument and value."""

from __future__ import annotations

import pytest

from lrsearch.errors import LRSearchError, ScheduleError
from lrsearch.schedules import curve, make, validate
from lrsearch.schedules.search import space


@pytest.mark.parametrize(
    "call,field,fragments",
    [
        (lambda: make("nope", {}), "family", ["`nope`", "constant", "one_cycle"]),
        (lambda: make("step_decay", {"lr0": 0.1, "dorp": 0.5}), "dorp", ["`dorp`", "drop"]),
        (lambda: make("step_decay", {"drop": 1.5}), "drop", ["`drop`", "< 1.0", "drop=1.5"]),
        (lambda: make("constant", {"lr": -0.1}), "lr", ["`lr`", "> 0.0", "lr=-0.1"]),
        (lambda: make("constant", {"lr": float("nan")}), "lr", ["`lr`", "finite"]),
        (lambda: make("constant", {"lr": "0.1"}), "lr", ["`lr`", "number", "'0.1'"]),
        (lambda: make("constant", {"lr": True}), "lr", ["`lr`", "number"]),
        (
            lambda: make("step_decay", {"epochs_drop": 2.5}),
            "epochs_drop",
            ["`epochs_drop`", "whole", "2.5"],
        ),
        (
            lambda: make("one_cycle", {"max_lr": 0.1, "anneal": "cosine"}),
            "anneal",
            ["`anneal`", "cos, linear", "'cosine'"],
        ),
        (
            lambda: make("cyclical", {"base_lr": 0.1, "max_lr": 0.01}),
            "base_lr",
            ["`base_lr`", "`max_lr`", "base_lr=0.1", "max_lr=0.01"],
        ),
        (
            lambda: make("piecewise", {"values": [0.1]}),
            "boundaries_epochs",
            ["`boundaries_epochs`", "required"],
        ),
        (
            lambda: make("piecewise", {"boundaries_epochs": [3, 2], "values": [1.0, 0.5, 0.1]}),
            "boundaries_epochs",
            ["strictly increasing", "[3.0, 2.0]"],
        ),
        (
            lambda: make("wsd", {"warmup_frac": 0.6, "decay_frac": 0.6}),
            "decay_frac",
            ["`decay_frac`", "warmup_frac=0.6"],
        ),
        (
            lambda: validate("cosine", {"warmup_epochs": 12}, steps_per_epoch=5, epochs=10),
            "warmup_epochs",
            ["`warmup_epochs`", "< `epochs`", "warmup_epochs=12", "epochs=10"],
        ),
        (
            lambda: validate("triangle", {"warmup_epochs": 10}, steps_per_epoch=5, epochs=10),
            "warmup_epochs",
            ["`warmup_epochs`", "< `epochs`"],
        ),
        (
            lambda: validate("cyclical", {"step_size_up_epochs": 0.1}, steps_per_epoch=2, epochs=5),
            "step_size_up_epochs",
            ["`step_size_up_epochs`", "at least one step"],
        ),
        (
            lambda: validate("one_cycle", {"pct_start": 0.01}, steps_per_epoch=2, epochs=5),
            "pct_start",
            ["`pct_start`", "pct_start=0.01", "total_steps=10"],
        ),
        (
            lambda: curve("constant", {}, steps_per_epoch=0, epochs=3),
            "steps_per_epoch",
            ["`steps_per_epoch`", "steps_per_epoch=0"],
        ),
        (
            lambda: space("constant", {"lr": {"low": 0.1, "high": 0.01}}, epochs=10),
            "search_space.constant.lr",
            ["low must be < high", "low=0.1", "high=0.01"],
        ),
        (
            lambda: space("constant", {"lr": {"low": 0.1, "high": 0.1}}, epochs=10),
            "search_space.constant.lr",
            ["low must be < high"],
        ),
        (
            lambda: space("step_decay", {"drop": {"low": 0.1, "high": 2.0}}, epochs=10),
            "search_space.step_decay.drop",
            ["`drop`", "< 1.0", "drop=2.0"],
        ),
        (
            lambda: space("constant", {"lr": {"value": 0}}, epochs=10),
            "search_space.constant.lr",
            ["`lr`", "> 0.0"],
        ),
        (
            lambda: space("constant", {"lr": {"low": 0.0, "high": 1.0, "log": True}}, epochs=10),
            "search_space.constant.lr",
            ["`lr`", "> 0.0"],
        ),
        (
            lambda: space("constant", {"rate": {"value": 0.1}}, epochs=10),
            "search_space.constant.rate",
            ["unknown parameter `rate`", "lr"],
        ),
        (
            lambda: space("constant", {"lr": {"min": 0.1}}, epochs=10),
            "search_space.constant.lr",
            ["Received keys: ['min']"],
        ),
        (
            lambda: space("cosine", {"warmup_epochs": {"low": 0, "high": 12}}, epochs=10),
            "search_space.cosine.warmup_epochs",
            ["< `epochs`", "warmup_epochs=12.0", "epochs=10"],
        ),
        (
            lambda: space("one_cycle", {"anneal": {"choices": ["cos", "sin"]}}, epochs=10),
            "search_space.one_cycle.anneal",
            ["'sin'"],
        ),
        (
            lambda: space("cyclical", {"base_lr": {"low": 0.5, "high": 0.9}}, epochs=10),
            "search_space.cyclical.base_lr",
            ["< `max_lr`"],
        ),
        (
            lambda: space("piecewise", {}, epochs=10),
            "search_space.piecewise.boundaries_epochs",
            ["no default search range"],
        ),
    ],
)
def test_bad_parameters_name_the_argument_and_value(call, field: str, fragments: list[str]) -> None:
    with pytest.raises(ScheduleError) as info:
        call()
    assert isinstance(info.value, LRSearchError)
    assert info.value.field == field
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_to_keras_refuses_adaptive_family_with_a_reason() -> None:
    from lrsearch.schedules import to_keras

    with pytest.raises(ScheduleError, match="adaptive"):
        to_keras("reduce_on_plateau", {}, steps_per_epoch=2, epochs=3)
