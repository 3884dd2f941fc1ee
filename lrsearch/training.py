"""Train one configuration and return its per-epoch curves (imports Keras; TensorFlow only
where it is Keras' backend).

`train(config)` opens the dataset (`open_input`: arrays in memory, or a dataset reference
streamed from its files), builds (or loads) the model and the optimizer with the schedule,
trains on its batches (tf.data with TensorFlow's Keras backend, `keras.utils.PyDataset`s with
JAX's or PyTorch's: lrsearch.datasets.portable), shuffled with the run's seed, a new order each
epoch; steps per epoch from the example count, so every schedule is laid out exactly; and
records per epoch: the LR the optimizer applied at the first and the last step of the epoch
(read from the optimizer), the seconds it took, and every metric Keras logged.

A caller-supplied `on_epoch_end(record)` runs after each epoch; whatever it raises (e.g.
optuna.TrialPruned) stops training and propagates. `should_stop()` is checked after each epoch
(TrainingCancelled). A NaN or infinite loss ends training with TrainingDiverged naming the epoch.

With a `CheckpointPlan`, the run saves a checkpoint (lrsearch.checkpoints) after every epoch
but the last, once `on_epoch_end` has returned (the worker has recorded the epoch by then), and
with `resume` it starts from the newest one: model and optimizer variables restored (so the
optimizer's step, and with it the schedule, continue where they stopped), Keras' `fit` started
at the next epoch, the earlier epochs' records returned first. `pause_after_epoch()` is asked
last at each epoch's end, after its checkpoint is written: True ends training with
TrainingPaused (a worker that is shutting down hands the trial on without losing the epoch).
"""

from __future__ import annotations

import math
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from lrsearch import checkpoints, datasets, optimizers, runtime
from lrsearch.datasets import portable
from lrsearch.datasets.options import StreamOptions
from lrsearch.datasets.references import KerasDataset
from lrsearch.datasets.uploaded import open_npz
from lrsearch.errors import (
    CheckpointUnusable,
    DatasetError,
    ObjectiveNotLogged,
    TrainingCancelled,
    TrainingDiverged,
    TrainingError,
    TrainingPaused,
    require_int,
)
from lrsearch.models.resolve import compiled_model
from lrsearch.schedules import validate
from lrsearch.schedules.keras import keras_callbacks, learning_rate_for, momentum_schedule
from lrsearch.spec import METRIC_NAME, RunSpec

if TYPE_CHECKING:  # TensorFlow is imported only where it is Keras' backend
    import tensorflow as tf

    from lrsearch.datasets.streams import Input


@dataclass(frozen=True)
class CheckpointPlan:
    """Where a run keeps its checkpoints (its trial's own folder, shared by every worker) and
    the checkpoint it starts from (`resume_from`: that checkpoint's own folder, as the worker
    chose it, or None to start at epoch 0). `fingerprint` (checkpoints.fingerprint of the run's
    config) is written into each checkpoint and must match to resume; `attempt` is the
    claim's, which names its checkpoints."""

    folder: str
    fingerprint: str
    resume_from: str | None = None
    attempt: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """One training run: what to train (`spec`, shared by a study's trials) under one schedule.
    Schedules are laid out on spe = ceil(train samples / spec.batch_size).

    `seed` is the run's own (a trial's: spec.trial_seed(number)); it drives initialisation and
    data order, while spec.seed fixes the validation split. None means spec.seed."""

    spec: RunSpec
    schedule: str = "constant"
    schedule_params: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 5
    seed: int | None = None
    data_dir: str | None = None
    val_fraction: float = 0.2
    max_params: int | None = None  # uploads' and plugin builders' size limit (built-ins:
    # checked at submission)
    roots: tuple[str, ...] = ()  # where dataset references may read (LRSEARCH_DATA_ROOTS)
    stream: StreamOptions = field(default_factory=StreamOptions)
    checkpoint: CheckpointPlan | None = None

    def __post_init__(self) -> None:
        require_int("epochs", self.epochs, 1, TrainingError)
        if self.seed is not None:
            require_int("seed", self.seed, 0, TrainingError)

    @property
    def run_seed(self) -> int:
        return self.spec.seed if self.seed is None else self.seed


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: the LR applied at its first and last step, its duration, and every metric
    Keras logged for it, by Keras' own names ("loss", "val_loss", "accuracy", "val_auc", ...);
    a non-finite metric other than the loss is None."""

    epoch: int
    lr_first: float
    lr_last: float
    seconds: float
    metrics: Mapping[str, float | None]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "metrics": dict(self.metrics)}


@dataclass
class TrainResult:
    """The run's epochs, those restored from a checkpoint first (`resumed_from` of them), and
    what it ran on (`provenance`, lrsearch.runtime.Runtime.provenance)."""

    steps_per_epoch: int
    epochs: list[EpochRecord]
    resumed_from: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    return max(1, math.ceil(n_samples / batch_size))


def open_input(spec: RunSpec, *, data_dir: str | None, val_fraction: float = 0.2,
               roots: tuple[str, ...] | list[str] = (),
               stream: StreamOptions | None = None,
               backend_neutral: bool | None = None) -> Input | portable.PortableInput:
    """The run's data: a dataset reference streamed from its files (after checking they are
    the ones registered), an .npz upload read in place, or a built-in dataset as arrays (a
    registered Keras dataset is its built-in). With TensorFlow's Keras backend the batches
    are tf.data pipelines; otherwise (`backend_neutral`, by default whenever the backend is
    not TensorFlow) `keras.utils.PyDataset`s (lrsearch.datasets.portable), which read
    everything but CSV and TFRecord."""
    data = spec.data
    neutral = keras.backend.backend() != "tensorflow" if backend_neutral is None \
        else backend_neutral
    if data.source is not None and not isinstance(data.source, KerasDataset):
        if data.registered is None:
            raise DatasetError(f"Dataset `{data.name}` is not registered yet.", field="dataset")
        if neutral:
            return portable.from_source(data.name, data.source, data.registered, tuple(roots))
        from lrsearch.datasets.streams import from_source

        return from_source(data.name, data.source, data.registered, tuple(roots),
                           stream or StreamOptions())
    if data.file is not None:  # an .npz upload: memory-mapped, read a batch at a time
        if not Path(data.file).is_file():
            raise DatasetError(f"The file of dataset `{data.name}` is missing; upload it "
                               "again.", field="dataset")
        mapped = open_npz(Path(data.file), task=data.task,
                          data_dir=None if data_dir is None else Path(data_dir))
        if neutral:
            return portable.from_npz(mapped)
        from lrsearch.datasets.streams import from_npz

        return from_npz(mapped)
    name = data.source.dataset if isinstance(data.source, KerasDataset) else data.name
    arrays = datasets.load(name, data_dir=data_dir, val_fraction=val_fraction, seed=spec.seed)
    if neutral:
        return portable.from_arrays(arrays)
    from lrsearch.datasets.streams import from_arrays

    return from_arrays(arrays)


def pipeline(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None) -> tf.data.Dataset:
    """Batches of (x, y); shuffled with `seed` (a new order each epoch) when seed is not None.
    tf.data: for TensorFlow's Keras backend only."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _finite(value: Any) -> float | None:
    """A logged value as a float, None when it is missing or not finite (JSON has no NaN)."""
    try:
        number = float(np.asarray(value))
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


MAX_METRICS = 64  # what one epoch record may hold (a user's model chooses how many it logs)


def _metrics(logs: Mapping[str, Any]) -> dict[str, float | None]:
    """Keras' logs as an epoch record's metrics: names as Keras logs them (checked: they are
    stored and shown), values finite or None."""
    names = sorted(name for name in logs if name != "learning_rate")
    bad = [name for name in names if not isinstance(name, str) or not METRIC_NAME.match(name)]
    if bad or len(names) > MAX_METRICS:
        raise TrainingError(f"The model must log at most {MAX_METRICS} metrics named with "
                            f"letters, digits and _.>/- (at most 128 characters). Received: "
                            f"{len(names)} metrics{', bad names ' + repr(bad[:5]) if bad else ''}",
                            field="metrics")
    return {name: _finite(logs[name]) for name in names}


class _Recorder(keras.callbacks.Callback):
    """Reads the applied LR at epoch boundaries and turns Keras logs into EpochRecords; after
    the first epoch, an objective metric the model does not log stops training
    (ObjectiveNotLogged, listing what it does log)."""

    def __init__(self, schedule: Any, on_epoch_end: Callable[[EpochRecord], None] | None,
                 should_stop: Callable[[], bool] | None, objective: str | None = None) -> None:
        super().__init__()
        self.schedule = schedule  # the optimizer's schedule, or None for a float LR
        self.hook, self.should_stop, self.objective = on_epoch_end, should_stop, objective
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
        metrics = _metrics(logs)
        if self.objective is not None and self.objective not in metrics:
            raise ObjectiveNotLogged(self.objective, sorted(metrics))
        record = EpochRecord(epoch, self._lr_first, self._lr(-1),
                             time.perf_counter() - self._start, metrics)
        self.records.append(record)
        if self.hook is not None:
            self.hook(record)
        if self.should_stop is not None and self.should_stop():
            raise TrainingCancelled(epoch)


class _Checkpointer(keras.callbacks.Callback):
    """Last in the callback list, so it sees every callback's end-of-epoch state: restores the
    adaptive callbacks' state at the start of a resumed run (after their own reset) and saves
    a checkpoint after each epoch but the last. A checkpoint that cannot be written (a full or
    vanished disk) is reported on stderr and training goes on: it only costs the resume."""

    def __init__(self, plan: CheckpointPlan, recorder: _Recorder,
                 adaptive: list[keras.callbacks.Callback], resumed: checkpoints.Checkpoint | None,
                 seed: int, spe: int, epochs: int) -> None:
        super().__init__()
        self.plan, self.recorder, self.adaptive, self.resumed = plan, recorder, adaptive, resumed
        self.seed, self.spe, self.epochs = seed, spe, epochs
        self.saved: int | None = None  # the last epoch whose checkpoint was written

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.resumed is not None:
            checkpoints.restore_callbacks(self.resumed, self.adaptive)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if epoch + 1 >= self.epochs:
            return  # the trial ends with this epoch: nothing to resume
        try:
            checkpoints.save(self.plan.folder, model=self.model, callbacks=self.adaptive,
                             records=[r.as_dict() for r in self.recorder.records],
                             fingerprint=self.plan.fingerprint, seed=self.seed,
                             steps_per_epoch=self.spe, attempt=self.plan.attempt)
            self.saved = epoch
        except OSError as e:
            import sys

            print(f"lrsearch: could not save the checkpoint after epoch {epoch}: {e}",
                  file=sys.stderr)


class _PauseAfter(keras.callbacks.Callback):
    """Last of all: ends training with TrainingPaused when `pause()` says so at an epoch's end
    and the checkpointer saved that epoch (a checkpoint that could not be written does not
    pause: the run trains on, within the worker's grace period); the last epoch ends the run
    anyway."""

    def __init__(self, pause: Callable[[], bool], checkpointer: _Checkpointer | None,
                 epochs: int) -> None:
        super().__init__()
        self.pause, self.checkpointer, self.epochs = pause, checkpointer, epochs

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        saved = self.checkpointer is not None and self.checkpointer.saved == epoch
        if epoch + 1 < self.epochs and saved and self.pause():
            raise TrainingPaused(epoch)


def _resume_point(config: TrainConfig, spe: int) -> checkpoints.Checkpoint | None:
    """The checkpoint the run was told to start from, exactly that one (the worker has already
    recorded its epochs as the trial's): CheckpointUnusable when it is gone or damaged, of
    another run, or laid out on other steps per epoch (the data changed under it)."""
    plan = config.checkpoint
    if plan is None or plan.resume_from is None:
        return None
    found = checkpoints.read(plan.resume_from, plan.fingerprint)
    if found is None:
        raise CheckpointUnusable(f"The checkpoint {Path(plan.resume_from).name} to resume from "
                                 "is gone, damaged or of another configuration.")
    if found.steps_per_epoch != spe or found.epochs_done >= config.epochs:
        raise CheckpointUnusable(f"The checkpoint {found.path.name} was trained with "
                                 f"{found.steps_per_epoch} steps per epoch and "
                                 f"{found.epochs_done} epochs; this run has {spe} steps per "
                                 f"epoch and {config.epochs} epochs.")
    return found


def _data_seed(seed: int, start_epoch: int) -> int:
    """The data order's seed: the run's own from the first epoch; a run resumed at epoch k
    draws a new order from (seed, k), rather than replaying epoch 0's order as epoch k."""
    if start_epoch == 0:
        return seed
    return int.from_bytes(np.random.SeedSequence([seed, start_epoch]).generate_state(1)
                          .tobytes()[:4], "little") % 2**31


def train(config: TrainConfig, *, on_epoch_end: Callable[[EpochRecord], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          on_start: Callable[[int, dict[str, Any]], None] | None = None,
          pause_after_epoch: Callable[[], bool] | None = None) -> TrainResult:
    """Train `config` and return its curves (see the module docstring for the contract).
    `on_start(steps_per_epoch, provenance)` runs once the data is loaded and the model
    compiled, before the first step."""
    spec = config.spec
    data = open_input(spec, data_dir=config.data_dir, val_fraction=config.val_fraction,
                      roots=config.roots, stream=config.stream)
    spe = steps_per_epoch(data.train_examples, spec.batch_size)
    family, timeline = validate(config.schedule, config.schedule_params, steps_per_epoch=spe,
                                epochs=config.epochs)
    resumed = _resume_point(config, spe)
    start = 0 if resumed is None else resumed.epochs_done
    seed = config.run_seed if resumed is None else resumed.seed
    keras.utils.set_random_seed(seed)
    ran = runtime.prepare(spec)
    lr = learning_rate_for(family, timeline)
    optimizer = optimizers.build(spec.optimizer.name, spec.optimizer.params, lr,
                                 momentum_schedule(family, timeline))
    model = compiled_model(spec, data.input_shape, data.head, optimizer,
                           max_params=config.max_params, jit_compile=ran.jit_compile)
    provenance = ran.provenance(model)
    if on_start is not None:
        on_start(spe, provenance)
    recorder = _Recorder(None if family.adaptive else lr, on_epoch_end, should_stop,
                         spec.objective.metric)
    adaptive = keras_callbacks(family)
    callbacks: list[keras.callbacks.Callback] = [recorder, *adaptive]
    if resumed is not None:
        # model.optimizer, not `optimizer`: under mixed_float16 Keras wraps it in a
        # LossScaleOptimizer, whose own variables (the loss scale) the checkpoint holds too.
        model.optimizer.build(model.trainable_variables)
        try:
            checkpoints.restore_variables(resumed, model)
            recorder.records = [EpochRecord(**{**r, "metrics": dict(r["metrics"])})
                                for r in resumed.records]
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
            raise CheckpointUnusable(f"The checkpoint {resumed.path.name} could not be "
                                     f"restored: {e}") from e
    checkpointer = None
    if config.checkpoint is not None:
        checkpointer = _Checkpointer(config.checkpoint, recorder, adaptive, resumed, seed, spe,
                                     config.epochs)
        callbacks.append(checkpointer)
    if pause_after_epoch is not None:
        callbacks.append(_PauseAfter(pause_after_epoch, checkpointer, config.epochs))
    try:
        model.fit(data.train(spec.batch_size, _data_seed(seed, start)), steps_per_epoch=spe,
                  validation_data=data.val(spec.batch_size),
                  validation_steps=steps_per_epoch(data.val_examples, spec.batch_size),
                  epochs=config.epochs, initial_epoch=start, verbose=0,
                  shuffle=False,  # the pipeline shuffles
                  callbacks=callbacks)
    finally:
        data.close()  # a disk cache goes with the run
    return TrainResult(spe, recorder.records, start, provenance)
