"""Properties over every registered family and random valid parameters:
`curve()` equals `to_keras()` at every step, values are finite and positive, and the Keras
schedule survives serialize/deserialize and a saved-and-reloaded model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lrsearch.schedules.keras  # noqa: F401  (registers lrsearch>FamilySchedule)
from lrsearch.schedules import curve, names, spec, to_keras
from lrsearch.schedules.base import registry
from tests.schedules.strategies import family_case

STEP_FAMILIES = [n for n in names() if not registry.get(n).adaptive]
DEFAULTS = {"piecewise": {"boundaries_epochs": [1, 2], "values": [0.1, 0.05, 0.01]}}


def keras_values(schedule: Any, steps: int) -> np.ndarray:
    fn = tf.function(lambda s: schedule(s))
    return np.array([float(fn(tf.constant(s, dtype=tf.int64))) for s in range(steps)])


def assert_matches(keras_lrs: np.ndarray, lrs: np.ndarray) -> None:
    # The optimizer applies the LR in float32; Keras' own schedules also compute in float32, so
    # agreement is to float32 precision: 1e-5 relative, or 1e-6 of the peak where the value is
    # tiny (the last steps of a decay to zero, where cancellation in 1 - s/S dominates).
    np.testing.assert_allclose(keras_lrs, lrs, rtol=1e-5, atol=1e-6 * float(lrs.max()))


@pytest.mark.parametrize("family", STEP_FAMILIES)
def test_curve_equals_keras_for_random_parameters(family: str) -> None:
    @settings(
        max_examples=12,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    )
    @given(case=family_case(family))
    def check(case: tuple[dict[str, Any], int, int]) -> None:
        params, spe, epochs = case
        lrs = curve(family, params, steps_per_epoch=spe, epochs=epochs)
        assert lrs.shape == (spe * epochs,)
        assert np.all(np.isfinite(lrs))
        # Warm-ups may start at exactly 0 (start_lr=0, min_lr_ratio=0); every later step is > 0.
        assert lrs[0] >= 0 and np.all(lrs[1:] > 0)
        schedule = to_keras(family, params, steps_per_epoch=spe, epochs=epochs)
        assert_matches(keras_values(schedule, len(lrs)), lrs)
        config = keras.optimizers.schedules.serialize(schedule)
        restored = keras.optimizers.schedules.deserialize(config)
        assert_matches(keras_values(restored, len(lrs)), lrs)

    check()


@pytest.mark.parametrize("family", STEP_FAMILIES)
def test_schedule_survives_a_saved_and_reloaded_model(family: str, tmp_path: Path) -> None:
    params = DEFAULTS.get(family, {})
    spe, epochs = 3, 8
    lrs = curve(family, params, steps_per_epoch=spe, epochs=epochs)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(to_keras(family, params, steps_per_epoch=spe, epochs=epochs))
    model.compile(optimizer=opt, loss="mse")
    model.fit(np.zeros((6, 2)), np.zeros((6, 1)), batch_size=3, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    schedule = reloaded.optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
    assert_matches(keras_values(schedule, len(lrs)), lrs)
    # The reloaded optimizer resumes where it stopped: 2 steps done, the next LR is lrs[2].
    assert float(reloaded.optimizer.learning_rate) == pytest.approx(lrs[2], rel=1e-5)


@given(st.sampled_from(names()))
def test_every_spec_is_plain_json(family: str) -> None:
    import json

    data = spec(family)
    assert json.loads(json.dumps(data)) == data
    assert data["parameters"] and data["formula"]


@pytest.mark.parametrize("family", STEP_FAMILIES)
def test_pure_export_is_what_keras_serializes_and_the_snippet_runs(family: str) -> None:
    from lrsearch.schedules.export import keras_config, python_snippet

    params = DEFAULTS.get(family, {})
    config = keras_config(family, params, steps_per_epoch=3, epochs=8)
    schedule = to_keras(family, params, steps_per_epoch=3, epochs=8)
    assert keras.optimizers.schedules.serialize(schedule) == config
    namespace: dict[str, Any] = {}
    exec(python_snippet(family, params, steps_per_epoch=3, epochs=8), namespace)
    lrs = curve(family, params, steps_per_epoch=3, epochs=8)
    assert_matches(keras_values(namespace["schedule"], len(lrs)), lrs)
