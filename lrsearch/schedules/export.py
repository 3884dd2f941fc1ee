"""The Keras export of a schedule as plain data (no TensorFlow): the dict that
`keras.optimizers.schedules.serialize` would produce, and a ready-to-paste Python snippet.

Keras' own schedule is used where one computes exactly the family's formula (time_decay,
exponential, linear, polynomial, cosine); it deserializes without lrsearch. Every other family
becomes `lrsearch>FamilySchedule`, which needs `import lrsearch.schedules.keras` first.
`lrsearch.schedules.keras.to_keras` deserializes exactly this config.
"""

from __future__ import annotations

import math
import pprint
from collections.abc import Callable, Mapping
from typing import Any

from lrsearch.errors import ScheduleError
from lrsearch.schedules import validate
from lrsearch.schedules.base import Family, Timeline

KERAS_MODULE = "keras.optimizers.schedules"
OURS = {"module": "lrsearch.schedules.keras", "class_name": "FamilySchedule",
        "registered_name": "lrsearch>FamilySchedule"}


def _time_decay(f: Any, t: Timeline) -> tuple[str, dict[str, Any]]:
    return "InverseTimeDecay", {"initial_learning_rate": f.lr0, "decay_steps": t.steps_per_epoch,
                                "decay_rate": f.decay_rate, "staircase": f.per_epoch}


def _exponential(f: Any, t: Timeline) -> tuple[str, dict[str, Any]]:
    return "ExponentialDecay", {"initial_learning_rate": f.lr0,
                                "decay_steps": t.steps_per_epoch,
                                "decay_rate": math.exp(-f.k), "staircase": f.per_epoch}


def _polynomial(f: Any, t: Timeline) -> tuple[str, dict[str, Any]]:
    return "PolynomialDecay", {"initial_learning_rate": f.lr0, "decay_steps": t.total_steps,
                               "end_learning_rate": f.end_lr,
                               "power": getattr(f, "power", 1.0), "cycle": False}


def _cosine(f: Any, t: Timeline) -> tuple[str, dict[str, Any]]:
    W = t.steps(f.warmup_epochs)
    if W == 0:
        return "CosineDecay", {"initial_learning_rate": f.peak_lr, "decay_steps": t.total_steps,
                               "alpha": f.alpha, "warmup_target": None, "warmup_steps": 0}
    return "CosineDecay", {"initial_learning_rate": f.warmup_start_lr,
                           "decay_steps": t.total_steps - W, "alpha": f.alpha,
                           "warmup_target": f.peak_lr, "warmup_steps": W}


# Families whose formula a Keras schedule computes exactly (checked against Keras in the tests).
NATIVE: dict[str, Callable[[Any, Timeline], tuple[str, dict[str, Any]]]] = {
    "time_decay": _time_decay,
    "exponential": _exponential,
    "linear": _polynomial,
    "polynomial": _polynomial,
    "cosine": _cosine,
}


def config_for(family: Family, timeline: Timeline) -> dict[str, Any]:
    """The serialized Keras schedule of a validated family on a timeline."""
    if family.adaptive:
        raise ScheduleError(
            f"{family.name} is adaptive: its LR reacts to metrics, so it is not a step schedule. "
            "Train with a float learning rate and Keras' ReduceLROnPlateau callback.",
            field="family")
    native = NATIVE.get(family.name)
    if native is not None:
        class_name, config = native(family, timeline)
        return {"module": KERAS_MODULE, "class_name": class_name,
                "config": {**config, "name": class_name}, "registered_name": None}
    return {**OURS, "config": {"family": family.name, "params": family.params(),
                               "steps_per_epoch": timeline.steps_per_epoch,
                               "epochs": timeline.epochs, "quantity": "lr"}}


def keras_config(name: str, params: Mapping[str, Any] | None, *, steps_per_epoch: int,
                 epochs: int) -> dict[str, Any]:
    """What `keras.optimizers.schedules.serialize(to_keras(...))` returns."""
    family, timeline = validate(name, params, steps_per_epoch=steps_per_epoch, epochs=epochs)
    return config_for(family, timeline)


def python_snippet(name: str, params: Mapping[str, Any] | None, *, steps_per_epoch: int,
                   epochs: int) -> str:
    """Ready-to-paste Python that builds the optimizer's schedule."""
    config = keras_config(name, params, steps_per_epoch=steps_per_epoch, epochs=epochs)
    lines = ["import keras"]
    if config["module"] != KERAS_MODULE:
        lines.append("import lrsearch.schedules.keras  # registers lrsearch>FamilySchedule")
    lines += [f"config = {pprint.pformat(config, sort_dicts=False, width=88)}",
              "schedule = keras.optimizers.schedules.deserialize(config)",
              "optimizer = keras.optimizers.SGD(learning_rate=schedule)  # or any optimizer",
              f"# laid out for {steps_per_epoch} steps per epoch and {epochs} epochs"]
    return "\n".join(lines)
