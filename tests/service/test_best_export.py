"""GET /best: the Keras export of the best trial deserializes and reproduces the curve, for
every family; cross-family studies get a leaderboard."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

import lrsearch.schedules.keras  # noqa: F401  (registers lrsearch>FamilySchedule)
from lrsearch import schedules
from tests.schedules.test_properties import DEFAULTS, assert_matches
from tests.service.helpers import run_trial

SPE, EPOCHS = 7, 6


@pytest.mark.parametrize("family", schedules.names())
def test_best_export_deserializes_and_reproduces_the_curve(client: TestClient, engine: Engine,
                                                           family: str) -> None:
    params = {**schedules.make(family, DEFAULTS.get(family, {})).params()}
    if family in ("rampup_exp",):
        params.update(rampup_epochs=2)
    if family == "step_decay":
        params.update(epochs_drop=2)
    body = {"family": family, "dataset": "digits", "epochs": EPOCHS, "n_trials": 1}
    if family == "piecewise":
        body["search_space"] = {"piecewise": {k: {"value": v} for k, v in params.items()}}
    sid = client.post("/v1/studies", json=body).json()["id"]
    run_trial(engine, sid, 0, family, params, 0.75, epochs=EPOCHS, spe=SPE)
    r = client.get(f"/v1/studies/{sid}/best")
    assert r.status_code == 200, r.text
    best = r.json()
    assert best["family"] == family and best["params"] == params and best["value"] == 0.75
    assert len(best["history"]) == EPOCHS
    lrs = schedules.curve(family, params, steps_per_epoch=SPE, epochs=EPOCHS)
    np.testing.assert_array_equal(np.array(best["curve"]["lr"]), lrs[best["curve"]["step"]])
    if family == "reduce_on_plateau":
        assert best["keras"] is None and "ReduceLROnPlateau" in best["note"]
        return
    schedule = keras.optimizers.schedules.deserialize(best["keras"])
    fn = tf.function(lambda s: schedule(s))
    assert_matches(np.array([float(fn(tf.constant(s, tf.int64))) for s in range(len(lrs))]),
                   lrs)
    namespace: dict = {}
    exec(best["snippet"], namespace)
    assert isinstance(namespace["optimizer"], keras.optimizers.Optimizer)


def test_cross_family_leaderboard(client: TestClient, engine: Engine) -> None:
    body = {"families": ["constant", "step_decay", "cosine"], "dataset": "digits",
            "epochs": 4, "n_trials": 5}
    sid = client.post("/v1/studies", json=body).json()["id"]
    run_trial(engine, sid, 0, "constant", {"lr": 0.1}, 0.80)
    run_trial(engine, sid, 1, "step_decay", {"lr0": 0.1, "drop": 0.5, "epochs_drop": 2}, 0.90)
    run_trial(engine, sid, 2, "constant", {"lr": 0.05}, 0.85)
    run_trial(engine, sid, 3, "cosine", {"peak_lr": 0.1}, None, state="failed", reason="oom")
    best = client.get(f"/v1/studies/{sid}/best").json()
    assert best["family"] == "step_decay"
    board = best["leaderboard"]
    assert [(b["family"], b["value"]) for b in board] == [("step_decay", 0.90),
                                                          ("constant", 0.85)]
