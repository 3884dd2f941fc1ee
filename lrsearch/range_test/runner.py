"""Run the LR range test on a Keras model (imports TensorFlow).

`lr_find(model, x, y, settings)` works on any compiled Keras model whose optimizer has a float
learning rate: one optimizer step per ladder LR, recording the raw loss of each batch (the
metrics are reset before every step, because Keras 3 otherwise reports the running mean of the
epoch). Afterwards every model and optimizer variable is restored bit for bit.
`run(config)` builds the dataset, model and optimizer by name and adds repeats and suggestions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from lrsearch import datasets, optimizers
from lrsearch.errors import RangeTestError, require_int
from lrsearch.range_test.suggest import Suggestions, combine, family_bounds, suggest
from lrsearch.range_test.sweep import SweepSettings, SweepTracker, ladder
from lrsearch.training import compiled_model, pipeline


@dataclass
class Sweep:
    """One pass of the ladder. `lrs` is cut where the sweep stopped (diverged)."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    diverged: bool
    suggestions: Suggestions

    def as_dict(self) -> dict[str, Any]:
        return {"lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed,
                "diverged": self.diverged, "suggestions": self.suggestions.as_dict()}


def snapshot(model: keras.Model) -> list[np.ndarray]:
    """Copies of every model and optimizer variable (weights, BN statistics, slots, step)."""
    return [np.array(v.numpy(), copy=True) for v in _state(model)]


def restore(model: keras.Model, values: list[np.ndarray]) -> None:
    for variable, value in zip(_state(model), values, strict=True):
        variable.assign(value)


def _state(model: keras.Model) -> list[Any]:
    return [*model.variables, *model.optimizer.variables]


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int
             ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    return iter(pipeline(x, y, batch_size, seed).repeat().as_numpy_iterator())


def _loss(logs: Mapping[str, Any]) -> float:
    return float(np.asarray(logs["loss"]))


def lr_find(model: keras.Model, x: np.ndarray, y: np.ndarray, settings: SweepSettings, *,
            batch_size: int = 32, seed: int = 0,
            validation: tuple[np.ndarray, np.ndarray] | None = None) -> Sweep:
    """Sweep the ladder on a compiled model; with `validation` (a fixed subset) the curve is its
    loss after each step instead of the training batch's. Weights are restored afterwards."""
    opt = model.optimizer
    schedule_type = keras.optimizers.schedules.LearningRateSchedule
    if opt is None or isinstance(opt._learning_rate, schedule_type):
        raise RangeTestError("The range test needs a compiled model whose optimizer has a float "
                             "learning rate, not a schedule.", field="optimizer")
    if not opt.built:
        opt.build(model.trainable_variables)
    saved = snapshot(model)
    try:
        return _sweep(model, _batches(x, y, batch_size, seed), settings, validation)
    finally:
        restore(model, saved)


def _sweep(model: keras.Model, batches: Iterator[tuple[np.ndarray, np.ndarray]],
           settings: SweepSettings, validation: tuple[np.ndarray, np.ndarray] | None) -> Sweep:
    lrs = ladder(settings.min_lr, settings.max_lr, settings.num_iter, settings.mode)
    tracker = SweepTracker(settings.beta, settings.diverge_threshold)
    for lr in lrs:
        model.optimizer.learning_rate.assign(lr)
        xb, yb = next(batches)
        model.reset_metrics()  # the loss logged is then this batch's, not the epoch's mean
        loss = _loss(model.train_on_batch(xb, yb, return_dict=True))
        if validation is not None:
            model.reset_metrics()
            loss = _loss(model.test_on_batch(*validation, return_dict=True))
        if not tracker.add(loss):
            break
    done = len(tracker.raw)
    return Sweep([float(v) for v in lrs[:done]], tracker.raw, tracker.smoothed, tracker.diverged,
                 suggest(lrs[:done], tracker.smoothed, tracker.diverged))


@dataclass(frozen=True)
class RangeTestConfig:
    """A range test by names (what the API stores and the worker runs)."""

    dataset: str
    model: str = "mlp"
    model_params: Mapping[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    optimizer_params: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    settings: SweepSettings = field(default_factory=SweepSettings)
    repeats: int = 1
    seed: int = 0
    validation: bool = False
    val_samples: int = 256
    data_dir: str | None = None
    dataset_file: str | None = None  # an uploaded dataset's .npz

    def __post_init__(self) -> None:
        for name, low in (("repeats", 1), ("batch_size", 1), ("seed", 0), ("val_samples", 1)):
            require_int(name, getattr(self, name), low, RangeTestError)


def run(config: RangeTestConfig) -> dict[str, Any]:
    """Repeats with seeds seed, seed+1, ... (batch order and model initialisation), then the
    median suggestions, their log10 spread, and search bounds per family."""
    data = datasets.load(config.dataset, data_dir=config.data_dir, seed=config.seed,
                         file=config.dataset_file)
    val = (data.x_val[:config.val_samples], data.y_val[:config.val_samples])
    sweeps = []
    for r in range(config.repeats):
        keras.utils.set_random_seed(config.seed + r)
        opt = optimizers.build(config.optimizer, config.optimizer_params, config.settings.min_lr)
        model = compiled_model(data, config.model, config.model_params, opt)
        sweeps.append(lr_find(model, data.x_train, data.y_train, config.settings,
                              batch_size=config.batch_size, seed=config.seed + r,
                              validation=val if config.validation else None))
        keras.backend.clear_session()
    combined = combine([s.suggestions for s in sweeps])
    medians = Suggestions(**{k: v["median"] for k, v in combined.items()})
    return {"sweeps": [s.as_dict() for s in sweeps], "suggestions": combined,
            "family_bounds": family_bounds(medians)}
