"""Train one configuration and return its per-epoch curves (imports TensorFlow).

`train(config)` loads the dataset, builds the model and the optimizer with the schedule,
trains with a tf.data pipeline (shuffle with the seed, batch, prefetch) and records per epoch:
the LR the optimizer applied at the first and the last step of the epoch (read from the
optimizer), loss, val_loss, accuracy, val_accuracy and seconds.

A caller-supplied `on_epoch_end(record)` runs after each epoch; whatever it raises (e.g.
optuna.TrialPruned) stops training and propagates. `should_stop()` is checked after each epoch
(TrainingCancelled). A NaN or infinite loss ends training with TrainingDiverged naming the epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lrsearch import datasets, models, optimizers
from lrsearch.errors import TrainingCancelled, TrainingDiverged, TrainingError, require_int
from lrsearch.schedules import validate
from lrsearch.schedules.keras import keras_callbacks, learning_rate_for, momentum_schedule

METRIC = "accuracy"


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Schedules are laid out on spe = ceil(train samples / batch_size)."""

    dataset: str
    schedule: str = "constant"
    schedule_params: Mapping[str, Any] = field(default_factory=dict)
    model: str = "mlp"
    model_params: Mapping[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    optimizer_params: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 5
    batch_size: int = 32
    seed: int = 0
    data_dir: str | None = None
    dataset_file: str | None = None  # an uploaded dataset's .npz
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            require_int(name, getattr(self, name), low, TrainingError)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    lr_first: float
    lr_last: float
    loss: float
    val_loss: float | None
    metric: float | None
    val_metric: float | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    steps_per_epoch: int
    epochs: list[EpochRecord]
    metric: str = METRIC


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    return max(1, math.ceil(n_samples / batch_size))


def pipeline(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None) -> tf.data.Dataset:
    """Batches of (x, y); shuffled with `seed` (a new order each epoch) when seed is not None."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def compiled_model(data: datasets.Dataset, model: str, model_params: Mapping[str, Any],
                   optimizer: Any) -> keras.Model:
    net = models.build(model, model_params, data.input_shape, data.num_classes)
    net.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=[METRIC])
    return net


def _finite(value: Any) -> float | None:
    return None if value is None else float(value)


class _Recorder(keras.callbacks.Callback):
    """Reads the applied LR at epoch boundaries and turns Keras logs into EpochRecords."""

    def __init__(self, schedule: Any, on_epoch_end: Callable[[EpochRecord], None] | None,
                 should_stop: Callable[[], bool] | None) -> None:
        super().__init__()
        self.schedule = schedule  # the optimizer's schedule, or None for a float LR
        self.hook, self.should_stop = on_epoch_end, should_stop
        self.records: list[EpochRecord] = []

    def _lr(self, step_offset: int) -> float:
        opt = self.model.optimizer
        if self.schedule is None:
            return float(np.asarray(opt.learning_rate))
        return float(np.asarray(self.schedule(opt.iterations + step_offset)))

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._start, self._lr_first = time.perf_counter(), self._lr(0)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        loss = float(logs.get("loss", math.nan))
        if not math.isfinite(loss):
            raise TrainingDiverged(epoch, loss)
        record = EpochRecord(epoch, self._lr_first, self._lr(-1), loss,
                             _finite(logs.get("val_loss")), _finite(logs.get(METRIC)),
                             _finite(logs.get(f"val_{METRIC}")),
                             time.perf_counter() - self._start)
        self.records.append(record)
        if self.hook is not None:
            self.hook(record)
        if self.should_stop is not None and self.should_stop():
            raise TrainingCancelled(epoch)


def train(config: TrainConfig, *, on_epoch_end: Callable[[EpochRecord], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          on_start: Callable[[int], None] | None = None) -> TrainResult:
    """Train `config` and return its curves (see the module docstring for the contract).
    `on_start(steps_per_epoch)` runs once the data is loaded, before the first step."""
    data = datasets.load(config.dataset, data_dir=config.data_dir,
                         val_fraction=config.val_fraction, seed=config.seed,
                         file=config.dataset_file)
    spe = steps_per_epoch(len(data.x_train), config.batch_size)
    if on_start is not None:
        on_start(spe)
    family, timeline = validate(config.schedule, config.schedule_params, steps_per_epoch=spe,
                                epochs=config.epochs)
    keras.utils.set_random_seed(config.seed)
    lr = learning_rate_for(family, timeline)
    optimizer = optimizers.build(config.optimizer, config.optimizer_params, lr,
                                 momentum_schedule(family, timeline))
    model = compiled_model(data, config.model, config.model_params, optimizer)
    recorder = _Recorder(None if family.adaptive else lr, on_epoch_end, should_stop)
    model.fit(pipeline(data.x_train, data.y_train, config.batch_size, config.seed),
              validation_data=pipeline(data.x_val, data.y_val, config.batch_size, None),
              epochs=config.epochs, verbose=0, shuffle=False,  # tf.data shuffles
              callbacks=[recorder, *keras_callbacks(family)])
    return TrainResult(spe, recorder.records)
