"""`lrsearch submit --objective/--direction` on top of a study file: what the body says."""

from __future__ import annotations

from typing import Any

import pytest

from lrsearch.cli.remote import _objective


@pytest.mark.parametrize("file,metric,direction,objective,left", [
    ({}, None, None, None, {}),
    ({}, "val_mae", None, {"metric": "val_mae"}, {}),
    ({}, None, "minimize", {"metric": "val_accuracy", "direction": "minimize"}, {}),
    # the deprecated fields move into `objective` (never both in one body)
    ({"metric": "val_loss", "direction": "minimize", "epochs": 2}, "val_auc", None,
     {"metric": "val_auc"}, {"epochs": 2}),
    ({"metric": "val_loss"}, None, "maximize", {"metric": "val_loss", "direction": "maximize"},
     {}),
    # a new metric drops the file's direction: it was the old metric's
    ({"objective": {"metric": "val_auc", "direction": "maximize"}}, "val_loss", None,
     {"metric": "val_loss"}, {"objective": {"metric": "val_auc", "direction": "maximize"}}),
    ({"objective": {"metric": "val_auc", "direction": "maximize"}}, "val_auc", None,
     {"metric": "val_auc", "direction": "maximize"},
     {"objective": {"metric": "val_auc", "direction": "maximize"}}),
])
def test_objective_flags_over_a_file(file: dict[str, Any], metric: str | None,
                                     direction: str | None, objective: dict[str, Any] | None,
                                     left: dict[str, Any]) -> None:
    spec = dict(file)
    assert _objective(spec, metric, direction) == objective
    assert spec == left
