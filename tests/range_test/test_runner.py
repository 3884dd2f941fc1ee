"""The range test on a real Keras model and scikit-learn's digits."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lrsearch import datasets
from lrsearch.errors import RangeTestError
from lrsearch.range_test import SweepSettings
from lrsearch.range_test.runner import RangeTestConfig, lr_find, run, snapshot
from lrsearch.spec import RunSpec


def digits_model(optimizer: keras.optimizers.Optimizer, batch_norm: bool = True) -> keras.Model:
    """A small digits classifier; batch norm adds non-trainable state the restore must cover."""
    keras.utils.set_random_seed(0)
    norm = [keras.layers.BatchNormalization()] if batch_norm else []
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu"), *norm,
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def test_range_test_on_digits_returns_curve_suggestions_and_bounds() -> None:
    result = run(RangeTestConfig(RunSpec.builtin("digits"),
                                 settings=SweepSettings(1e-4, 3.0, 60), repeats=2))
    assert len(result["sweeps"]) == 2
    sweep = result["sweeps"][0]
    assert len(sweep["lrs"]) == len(sweep["losses"]) == len(sweep["smoothed"]) > 5
    assert sweep["lrs"][0] == 1e-4
    assert result["suggestions"]["valley"]["n"] == 2
    assert result["suggestions"]["steepest"]["log10_spread"] >= 0
    assert 1e-4 <= result["suggestions"]["steepest"]["median"] <= 3.0
    assert "max_lr" in result["family_bounds"]["one_cycle"]


def test_weights_and_optimizer_state_are_restored_exactly() -> None:
    model = digits_model(keras.optimizers.Adam(1e-3))
    data = datasets.load("digits")
    model.fit(data.x_train[:64], data.y_train[:64], epochs=1, verbose=0)  # non-trivial state
    before = snapshot(model)
    lr_find(model, data.x_train, data.y_train, SweepSettings(1e-5, 1.0, 20))
    after = snapshot(model)
    assert len(before) == len(after) and len(before) > len(model.weights)
    for a, b in zip(before, after, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_losses_are_raw_per_batch_not_keras_running_mean() -> None:
    # One batch holds the whole set, so the loss of step i is the full-batch loss of the weights
    # before step i: replay the steps and compare with what the sweep recorded. (No batch norm:
    # it normalises differently in training and evaluation.)
    data = datasets.load("digits")
    x, y = data.x_train[:64], data.y_train[:64]
    model = digits_model(keras.optimizers.SGD(0.0), batch_norm=False)
    settings = SweepSettings(1e-2, 1.0, 8, diverge_threshold=1e9)
    sweep = lr_find(model, x, y, settings, batch_size=64)
    replay = []
    for lr in sweep.lrs:
        replay.append(model.evaluate(x, y, batch_size=64, verbose=0))
        model.optimizer.learning_rate.assign(lr)
        model.train_on_batch(x, y)
    np.testing.assert_allclose(sweep.losses, replay, rtol=1e-5)
    running_mean = np.cumsum(replay) / np.arange(1, len(replay) + 1)
    assert not np.allclose(sweep.losses, running_mean, rtol=1e-3)


def test_diverging_sweep_ends_early_with_truncated_curve() -> None:
    model = digits_model(keras.optimizers.SGD(0.0))
    data = datasets.load("digits")
    sweep = lr_find(model, data.x_train, data.y_train, SweepSettings(1e-3, 1e4, 80))
    assert sweep.diverged
    assert 5 < len(sweep.lrs) < 80
    assert len(sweep.losses) == len(sweep.lrs) == len(sweep.smoothed)
    assert sweep.suggestions.lr_at_minimum is not None


def test_validation_mode_records_loss_on_the_fixed_subset() -> None:
    model = digits_model(keras.optimizers.SGD(0.0), batch_norm=False)
    data = datasets.load("digits")
    val = (data.x_val[:100], data.y_val[:100])
    sweep = lr_find(model, data.x_train, data.y_train, SweepSettings(1e-9, 1e-8, 5),
                    validation=val)
    # At LR 1e-9 the weights barely move: every point is the same subset's loss.
    assert np.ptp(sweep.losses) < 1e-4
    assert sweep.losses[0] == pytest.approx(model.evaluate(*val, verbose=0), rel=1e-4)


def test_schedule_optimizer_is_refused() -> None:
    sched = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    model = digits_model(keras.optimizers.SGD(sched))
    with pytest.raises(RangeTestError, match="float learning rate"):
        lr_find(model, np.zeros((4, 8, 8, 1)), np.zeros(4), SweepSettings())
