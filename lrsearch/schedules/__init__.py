"""Learning-rate schedule families: one declaration each, pure numpy math, no TensorFlow.

Public API:
- `names()`: the registered family names.
- `spec(name, epochs=None)`: parameters (type, default, bounds, default search range,
  description) and formula, as JSON-ready plain data.
- `make(name, params)`: a validated family instance (`validate` adds the training length).
- `curve(name, params, steps_per_epoch=, epochs=)`: the LR at every step, a float64 array.
- `to_keras(...)`: a `keras.optimizers.schedules.LearningRateSchedule` equal to `curve()`
  (imports Keras, so it lives in `lrsearch.schedules.keras` and is loaded on first use).
- The Optuna search space lives in `lrsearch.schedules.search`.

Importing this package never imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# Importing the family modules registers them; the order is the order `names()` lists.
from lrsearch.schedules import adaptive, cosine, cyclic, decay, piecewise, warmup  # noqa: F401
from lrsearch.schedules.base import Family, ParamSpec, Timeline, make, param_specs, registry

__all__ = [
    "Family",
    "ParamSpec",
    "Timeline",
    "curve",
    "make",
    "momentum_curve",
    "names",
    "spec",
    "to_keras",
    "validate",
]

_ORDER = [
    "constant",
    "time_decay",
    "step_decay",
    "exponential",
    "hold_exponential",
    "linear",
    "polynomial",
    "cosine",
    "cosine_restarts",
    "triangle",
    "one_cycle",
    "rampup_exp",
    "cyclical",
    "wsd",
    "piecewise",
    "reduce_on_plateau",
]


def names() -> list[str]:
    """Registered family names, in the documented order."""
    known = registry.names()
    return [n for n in _ORDER if n in known] + [n for n in known if n not in _ORDER]


def spec(name: str) -> dict[str, Any]:
    """A family's description as plain data: what the API returns for GET /v1/schedules/{name}."""
    cls = registry.get(name)
    return {
        "name": cls.name,
        "description": " ".join((cls.__doc__ or "").split()),
        "formula": cls.formula,
        "adaptive": cls.adaptive,
        "parameters": [p.as_dict() for p in param_specs(cls)],
    }


def validate(
    name: str, params: Mapping[str, Any] | None, *, steps_per_epoch: int, epochs: int
) -> tuple[Family, Timeline]:
    """Build the family and check it against the training length (warm-up < training, ...)."""
    family = make(name, params)
    timeline = Timeline(steps_per_epoch, epochs)
    family.check(timeline)
    return family, timeline


def curve(
    name: str, params: Mapping[str, Any] | None, *, steps_per_epoch: int, epochs: int
) -> np.ndarray:
    """The LR at every step s = 0 .. S-1 as a float64 array of length S = epochs * spe.

    For an adaptive family this is the LR before any adaptation (see the family's docstring).
    """
    family, timeline = validate(name, params, steps_per_epoch=steps_per_epoch, epochs=epochs)
    steps = np.arange(timeline.total_steps, dtype=np.float64)
    return np.asarray(family.schedule(steps, timeline, np), dtype=np.float64)


def momentum_curve(
    name: str, params: Mapping[str, Any] | None, *, steps_per_epoch: int, epochs: int
) -> np.ndarray | None:
    """The momentum at every step for families that cycle it (one_cycle), else None."""
    family, timeline = validate(name, params, steps_per_epoch=steps_per_epoch, epochs=epochs)
    steps = np.arange(timeline.total_steps, dtype=np.float64)
    out = family.momentum(steps, timeline, np)
    return None if out is None else np.asarray(out, dtype=np.float64)


def to_keras(
    name: str, params: Mapping[str, Any] | None, *, steps_per_epoch: int, epochs: int
) -> Any:
    """A Keras LearningRateSchedule whose values equal `curve()` (imports Keras)."""
    from lrsearch.schedules import keras as keras_adapter

    return keras_adapter.to_keras(name, params, steps_per_epoch=steps_per_epoch, epochs=epochs)
