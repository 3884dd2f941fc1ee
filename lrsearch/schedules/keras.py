"""Keras adapters for the schedule families: the only module of `lrsearch.schedules` that
imports Keras.

`to_keras` deserializes the export of `lrsearch.schedules.export`: Keras' own schedule where
one computes exactly the family's formula, else `FamilySchedule`, which evaluates the family's
own `schedule()` with keras.ops in float64 and casts the result to float32. FamilySchedule is
registered as `lrsearch>FamilySchedule`: deserializing it needs this module imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import ops

from lrsearch.errors import ScheduleError
from lrsearch.schedules import validate
from lrsearch.schedules.adaptive import ReduceOnPlateau
from lrsearch.schedules.base import Family, Timeline
from lrsearch.schedules.export import config_for, keras_config

Schedules = keras.optimizers.schedules


@keras.saving.register_keras_serializable(package="lrsearch", name="FamilySchedule")
class FamilySchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A family's `schedule()` (or `momentum()` when quantity="momentum") as a Keras schedule."""

    def __init__(
        self,
        family: str,
        params: Mapping[str, Any],
        steps_per_epoch: int,
        epochs: int,
        quantity: str = "lr",
    ) -> None:
        super().__init__()
        if quantity not in ("lr", "momentum"):
            raise ScheduleError(
                f"Argument `quantity` must be lr or momentum. Received: quantity={quantity!r}",
                field="quantity",
            )
        self._family, self._timeline = validate(
            family, params, steps_per_epoch=steps_per_epoch, epochs=epochs
        )
        self.quantity = quantity

    def __call__(self, step: Any) -> Any:
        s = ops.cast(step, "float64")
        if self.quantity == "momentum":
            value = self._family.momentum(s, self._timeline, ops)
            if value is None:
                raise ScheduleError(f"{self._family.name} does not schedule momentum.")
        else:
            value = self._family.schedule(s, self._timeline, ops)
        return ops.cast(value, "float32")

    def get_config(self) -> dict[str, Any]:
        return {
            "family": self._family.name,
            "params": self._family.params(),
            "steps_per_epoch": self._timeline.steps_per_epoch,
            "epochs": self._timeline.epochs,
            "quantity": self.quantity,
        }


def to_keras(
    name: str, params: Mapping[str, Any] | None, *, steps_per_epoch: int, epochs: int
) -> Any:
    """A LearningRateSchedule whose value at step s equals `curve(...)[s]`: the deserialized
    `export.keras_config` (Keras' own class where one is exact, else FamilySchedule)."""
    config = keras_config(name, params, steps_per_epoch=steps_per_epoch, epochs=epochs)
    return Schedules.deserialize(config)


def momentum_schedule(family: Family, timeline: Timeline) -> FamilySchedule | None:
    """A schedule of the momentum for families that cycle it, else None."""
    steps = ops.convert_to_tensor([0.0], dtype="float64")
    if family.momentum(steps, timeline, ops) is None:
        return None
    return FamilySchedule(
        family.name, family.params(), timeline.steps_per_epoch, timeline.epochs, quantity="momentum"
    )


def keras_callbacks(family: Family) -> list[keras.callbacks.Callback]:
    """Callbacks an adaptive family needs (Keras' own ReduceLROnPlateau for reduce_on_plateau)."""
    if isinstance(family, ReduceOnPlateau):
        mode = "max" if "accuracy" in family.monitor else "min"
        return [
            keras.callbacks.ReduceLROnPlateau(
                monitor=family.monitor,
                factor=family.factor,
                patience=family.patience,
                min_delta=family.min_delta,
                cooldown=family.cooldown,
                min_lr=family.min_lr,
                mode=mode,
                verbose=0,
            )
        ]
    return []


def learning_rate_for(family: Family, timeline: Timeline) -> Any:
    """What to pass as the optimizer's learning_rate: a schedule, or lr0 for adaptive families."""
    if family.adaptive:
        return float(family.params()["lr0"])
    return Schedules.deserialize(config_for(family, timeline))
