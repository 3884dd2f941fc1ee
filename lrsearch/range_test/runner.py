"""Run the LR range test on a Keras model (imports Keras; TensorFlow only where it is Keras'
backend).

`lr_find(model, x, y, settings)` works on any compiled Keras model whose optimizer has a float
learning rate: one optimizer step per ladder LR, recording the raw loss of each batch (the
metrics are reset before every step, because Keras 3 otherwise reports the running mean of the
epoch). The training-loss sweep is one `model.fit` over the ladder's steps with a callback that
sets each step's LR and reads its loss (per-step `train_on_batch` calls cost about 3x as much;
see BENCHMARKS.md, B3); the validation-loss sweep steps with `train_on_batch` and
`test_on_batch`. With JAX's or PyTorch's Keras backend both sweeps step with `train_on_batch`
(the fit-with-callback path writes TensorFlow variables directly; under JAX a callback's write
would not reach the compiled step's state). Afterwards every model and optimizer variable is
restored bit for bit.
`run(config)` builds the dataset, model and optimizer from the RunSpec and adds repeats and
suggestions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from lrsearch import optimizers, runtime
from lrsearch.datasets.options import StreamOptions
from lrsearch.datasets.portable import Batches
from lrsearch.errors import RangeTestError, require_int
from lrsearch.models.resolve import compiled_model
from lrsearch.range_test.suggest import Suggestions, combine, family_bounds, suggest
from lrsearch.range_test.sweep import SweepSettings, SweepTracker, ladder
from lrsearch.spec import RunSpec
from lrsearch.training import open_input, pipeline


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
    if keras.backend.backend() == "tensorflow":
        return sweep_batches(model, pipeline(x, y, batch_size, seed).repeat(), settings,
                             validation=validation)
    rows = (np.asarray(x), np.asarray(y))
    return sweep_batches(model, Batches(lambda i: (rows[0][i], rows[1][i]), len(rows[0]),
                                        batch_size, seed), settings, validation=validation)


def sweep_batches(model: keras.Model, batches: Any, settings: SweepSettings, *,
                  validation: tuple[np.ndarray, np.ndarray] | None = None) -> Sweep:
    """`lr_find` on any endless stream of training batches: a tf.data.Dataset (TensorFlow's
    backend) or a portable `Batches` (any backend; passes repeat, a new order each);
    weights are restored afterwards."""
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    saved = snapshot(model)
    try:
        if isinstance(batches, Batches):
            return _sweep(model, _endless(batches), settings, validation)
        if validation is None:
            return _fit_sweep(model, batches, settings)
        return _sweep(model, iter(batches.as_numpy_iterator()), settings, validation)
    finally:
        restore(model, saved)


def _endless(batches: Batches) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every batch of every pass, for ever (a new order each pass, as Keras' fit would)."""
    while True:
        for i in range(len(batches)):
            yield batches[i]
        batches.on_epoch_end()


class _Ladder(keras.callbacks.Callback):
    """Inside one `fit`: before step i, LR = lrs[i] and the metrics reset; after it, its raw
    loss goes to the tracker, and training stops as soon as the tracker says so."""

    def __init__(self, lrs: np.ndarray, tracker: SweepTracker) -> None:
        super().__init__()
        self.lrs, self.tracker = lrs, tracker
        self.lr_variable: Any = None
        self.lr_values: list[Any] = []
        self.resets: list[tuple[Any, Any]] = []

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        # Per-step writes go straight to the TensorFlow variables with tensors made up front:
        # Keras' own Variable.assign costs 2-3x as much, and with it the LR write was most of
        # the sweep's cost over plain training (BENCHMARKS.md, B3). Only the loss's running
        # mean is reset; the other metrics (accuracy) are not read.
        import tensorflow as tf  # this path runs on TensorFlow's backend only

        lr = self.model.optimizer.learning_rate
        self.lr_variable = getattr(lr, "value", lr)
        self.lr_values = [tf.constant(v, self.lr_variable.dtype) for v in self.lrs]
        tracker = next((m for m in self.model.metrics if m.name == "loss"), None)
        metrics = [tracker] if tracker is not None else list(self.model.metrics)
        self.resets = []
        for v in (v for m in metrics for v in m.variables):
            variable = getattr(v, "value", v)
            self.resets.append((variable, tf.zeros_like(variable)))

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.lr_variable.assign(self.lr_values[batch], read_value=False)
        for variable, zero in self.resets:
            variable.assign(zero, read_value=False)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if not self.tracker.add(_loss(logs or {})):
            self.model.stop_training = True


def _fit_sweep(model: keras.Model, batches: Any, settings: SweepSettings) -> Sweep:
    lrs = ladder(settings.min_lr, settings.max_lr, settings.num_iter, settings.mode)
    tracker = SweepTracker(settings.beta, settings.diverge_threshold)
    model.fit(batches, epochs=1, steps_per_epoch=len(lrs), verbose=0,
              callbacks=[_Ladder(lrs, tracker)])
    return _result(lrs, tracker)


def _result(lrs: np.ndarray, tracker: SweepTracker) -> Sweep:
    done = len(tracker.raw)
    return Sweep([float(v) for v in lrs[:done]], tracker.raw, tracker.smoothed, tracker.diverged,
                 suggest(lrs[:done], tracker.smoothed, len(lrs)))


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
    return _result(lrs, tracker)


@dataclass(frozen=True)
class RangeTestConfig:
    """A range test: what to train (`spec`; its batch size and seed) and the sweep."""

    spec: RunSpec
    settings: SweepSettings = field(default_factory=SweepSettings)
    repeats: int = 1
    validation: bool = False
    val_samples: int = 256
    data_dir: str | None = None
    max_params: int | None = None  # uploads' and plugin builders' size limit
    roots: tuple[str, ...] = ()  # where dataset references may read (LRSEARCH_DATA_ROOTS)
    stream: StreamOptions = field(default_factory=StreamOptions)

    def __post_init__(self) -> None:
        for name, low in (("repeats", 1), ("val_samples", 1)):
            require_int(name, getattr(self, name), low, RangeTestError)


def run(config: RangeTestConfig) -> dict[str, Any]:
    """Repeats with seeds seed, seed+1, ... (batch order and model initialisation), then the
    median suggestions, their log10 spread, and search bounds per family."""
    spec = config.spec
    # tf.data batches on TensorFlow's backend (the training-loss sweep writes its variables
    # directly, see _Ladder), portable ones on the others.
    data = open_input(spec, data_dir=config.data_dir, roots=config.roots,
                      stream=config.stream)
    provenance: dict[str, Any] = {}
    try:
        val = data.val_arrays(config.val_samples)
        sweeps = []
        for r in range(config.repeats):
            keras.utils.set_random_seed(spec.seed + r)
            ran = runtime.prepare(spec)
            opt = optimizers.build(spec.optimizer.name, spec.optimizer.params,
                                   config.settings.min_lr)
            model = compiled_model(spec, data.input_shape, data.head, opt,
                                   max_params=config.max_params, jit_compile=ran.jit_compile)
            provenance = ran.provenance(model)
            sweeps.append(sweep_batches(model, data.train(spec.batch_size, spec.seed + r),
                                        config.settings,
                                        validation=val if config.validation else None))
            keras.backend.clear_session()
    finally:
        data.close()
    combined = combine([s.suggestions for s in sweeps])
    medians = Suggestions(**{k: v["median"] for k, v in combined.items()})
    return {"sweeps": [s.as_dict() for s in sweeps], "suggestions": combined,
            "family_bounds": family_bounds(medians), "provenance": provenance}
