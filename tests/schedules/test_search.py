"""The Optuna search space: real Optuna studies, define-by-run, overrides, cross-family."""

from __future__ import annotations

import math

import optuna
import pytest

from lrsearch.schedules import names, validate
from lrsearch.schedules.search import FAMILY_PARAM, Fixed, Range, space, suggest, suggest_any

optuna.logging.set_verbosity(optuna.logging.WARNING)
SEARCHABLE = [n for n in names() if n != "piecewise"]


@pytest.mark.parametrize("family", SEARCHABLE)
def test_default_space_samples_valid_parameters(family: str) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        params = suggest(trial, family, epochs=20, steps_per_epoch=5)
        validate(family, params, steps_per_epoch=5, epochs=20)
        study.tell(trial, 0.0)


def test_overrides_range_fixed_and_choices() -> None:
    overrides = {
        "max_lr": {"low": 0.01, "high": 0.1, "log": True},
        "pct_start": {"value": 0.25},
        "anneal": {"choices": ["linear"]},
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        p = suggest(trial, "one_cycle", overrides, epochs=10)
        assert 0.01 <= p["max_lr"] <= 0.1
        assert p["pct_start"] == 0.25 and p["anneal"] == "linear"
        assert "pct_start" not in trial.params  # fixed values are not Optuna dimensions
        study.tell(trial, 1.0)
    dist = study.trials[0].distributions["max_lr"]
    assert dist.log and math.isclose(dist.low, 0.01)


def test_per_epoch_ranges_scale_with_the_training_length() -> None:
    dims = space("cosine", epochs=50)
    assert dims["warmup_epochs"] == Range(0.0, 10.0, False, False)
    assert isinstance(space("polynomial", epochs=5)["end_lr"], Fixed)


def test_order_constraint_is_kept_while_sampling() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(100):
        trial = study.ask()
        p = suggest(
            trial,
            "cyclical",
            {
                "base_lr": {"low": 1e-4, "high": 0.5, "log": True},
                "max_lr": {"low": 1e-3, "high": 1.0, "log": True},
            },
            epochs=10,
        )
        assert p["base_lr"] < p["max_lr"]
        study.tell(trial, 0.0)


def test_cross_family_search_conditions_parameters_on_the_family() -> None:
    study = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, group=True)
    )
    seen = set()
    for _ in range(25):
        trial = study.ask()
        family, params = suggest_any(
            trial,
            ["constant", "one_cycle", "step_decay"],
            {"constant": {"lr": {"low": 0.01, "high": 0.1}}},
            epochs=10,
        )
        seen.add(family)
        assert trial.params[FAMILY_PARAM] == family
        own = {k for k in trial.params if k != FAMILY_PARAM}
        assert all(k.startswith(f"{family}.") for k in own)
        validate(family, params, steps_per_epoch=4, epochs=10)
        study.tell(trial, params.get("lr", 0.0))
    assert seen == {"constant", "one_cycle", "step_decay"}


def test_cross_family_override_for_a_family_not_in_the_study_is_an_error() -> None:
    from lrsearch.errors import ScheduleError

    trial = optuna.create_study().ask()
    with pytest.raises(ScheduleError, match="search_space: `cosine`"):
        suggest_any(trial, ["constant"], {"cosine": {}}, epochs=5)
