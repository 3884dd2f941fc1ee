"""The default `median` pruner compares a trial only with completed trials of its own schedule
family; in a one-family study it decides exactly as Optuna's MedianPruner(2, 1)."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest

from lrsearch.schedules.search import FAMILY_PARAM
from worker.search import FamilyMedianPruner, pruner

CHOICES = optuna.distributions.CategoricalDistribution(["constant", "cosine"])


def decisions(p: optuna.pruners.BasePruner, curves: list[list[float]], direction: str,
              families: list[str] | None = None) -> list[int | None]:
    """Each curve reported epoch by epoch to a study with pruner `p`; the epoch at which it
    was pruned (None: it completed)."""
    study = optuna.create_study(direction=direction, pruner=p)
    out: list[int | None] = []
    for i, curve in enumerate(curves):
        if families:  # the family parameter suggest_any records for a cross-family trial
            study.enqueue_trial({FAMILY_PARAM: families[i]})
        trial = study.ask({FAMILY_PARAM: CHOICES} if families else None)
        assert trial.params.get(FAMILY_PARAM) == (families[i] if families else None)
        pruned_at = None
        for step, value in enumerate(curve):
            trial.report(value, step)
            if trial.should_prune():
                pruned_at = step
                break
        out.append(pruned_at)
        if pruned_at is None:
            study.tell(trial, curve[-1])
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return out


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("seed", range(5))
def test_one_family_decides_as_optunas_median_pruner(direction: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    curves = [list(np.cumsum(rng.normal(0.05, 0.1, 6))) for _ in range(20)]
    ours = decisions(FamilyMedianPruner(2, 1), curves, direction)
    theirs = decisions(optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
                       curves, direction)
    assert ours == theirs and any(d is not None for d in ours)


def test_a_slow_starting_family_is_compared_with_its_own_kind() -> None:
    # Two constant LRs good early; a cosine that trails early and ends best; a second cosine
    # that trails its own family.
    constant = [0.80, 0.85, 0.86, 0.86]
    curves = [constant, constant, [0.50, 0.60, 0.80, 0.95], [0.52, 0.62, 0.85, 0.96],
              [0.40, 0.50, 0.70, 0.90], [0.30, 0.40, 0.50, 0.60]]
    families = ["constant", "constant", "cosine", "cosine", "cosine", "cosine"]
    across = decisions(optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
                       curves, "maximize", families)
    within = decisions(FamilyMedianPruner(2, 1), curves, "maximize", families)
    assert across[2:] == [1, 1, 1, 1]  # every cosine cut at epoch 2, the best ones too
    assert within == [None, None, None, None, 1, 1]  # cosines judged against cosines


def test_the_default_median_pruner_is_the_family_aware_one() -> None:
    spec: dict[str, Any] = {"pruner": {"name": "median"}, "epochs": 4}
    chosen = pruner(spec)
    assert isinstance(chosen, FamilyMedianPruner)
    assert (chosen.n_startup_trials, chosen.n_warmup_steps) == (2, 1)
