"""Learning-rate schedule families: one declaration each, pure numpy math, no TensorFlow.

Public API:
- `names()`: the registered family names.
- `spec(name, epochs=None)`: parameters (type, default, bounds, default search range,
  description) and formula, as JSON-ready plain data.
- `make(name, params)`: a validated family instance (`validate` adds the training length).
- `curve(name, params, steps_per_epoch=, epochs=)`: the LR at every step, a float64 array.
- `sampled_curve(..., points=)`: the LR at `sample_steps(S, points)` only (previews, exports),
  and `evaluations(..., points=)`: what that costs, known before computing it.
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
    "evaluations",
    "make",
    "momentum_curve",
    "names",
    "sample_steps",
    "sampled_curve",
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


def sample_steps(total_steps: int, points: int) -> np.ndarray:
    """At most `points` step indices spread evenly over 0 .. S-1, always keeping the first and
    the last; every step when S <= points."""
    if total_steps <= points:
        return np.arange(total_steps)
    return np.unique(np.round(np.linspace(0, total_steps - 1, points)).astype(int))


def evaluations(
    name: str,
    params: Mapping[str, Any] | None,
    *,
    steps_per_epoch: int,
    epochs: int,
    points: int,
) -> int:
    """The work of `sampled_curve` with the same arguments, before doing it: the steps it
    samples, min(S, points), times the family's pieces (a piecewise schedule's knots), which is
    what the one-`where`-per-piece Keras form computes. Validates the parameters."""
    family, timeline = validate(name, params, steps_per_epoch=steps_per_epoch, epochs=epochs)
    return min(timeline.total_steps, points) * family.pieces()


def sampled_curve(
    name: str,
    params: Mapping[str, Any] | None,
    *,
    steps_per_epoch: int,
    epochs: int,
    points: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(steps, LR at those steps) for steps = `sample_steps(S, points)`: equal to
    `curve(...)[steps]`, but only those steps are computed, so the cost is bounded by `points`
    however long the training is."""
    family, timeline = validate(name, params, steps_per_epoch=steps_per_epoch, epochs=epochs)
    steps = sample_steps(timeline.total_steps, points)
    lrs = family.schedule(steps.astype(np.float64), timeline, np)
    # A constant schedule's formula can give a scalar: one value per step, always.
    return steps, np.broadcast_to(np.asarray(lrs, dtype=np.float64), steps.shape).copy()


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
