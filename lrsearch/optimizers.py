"""Optimizers by name. The specs are plain data; `build()` imports Keras.

`momentum` is SGD with momentum 0.9 and `nesterov` adds Nesterov's correction; `adamw` is Adam
with decoupled weight decay. Keras 3 ignores the legacy `decay=` argument, so it is refused
here instead of silently doing nothing: use a schedule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lrsearch.errors import TrainingError
from lrsearch.registry import Registry

# name -> (Keras class, fixed arguments, {parameter: (default, low, high)})
Spec = tuple[str, dict[str, Any], dict[str, tuple[float, float, float]]]
OPTIMIZERS: Registry[Spec] = Registry("optimizer", error=TrainingError, field="optimizer")
for _name, _spec in {
    "sgd": ("SGD", {}, {}),
    "momentum": ("SGD", {}, {"momentum": (0.9, 0.0, 1.0)}),
    "nesterov": ("SGD", {"nesterov": True}, {"momentum": (0.9, 0.0, 1.0)}),
    "adam": ("Adam", {}, {"beta_1": (0.9, 0.0, 1.0), "beta_2": (0.999, 0.0, 1.0),
                          "epsilon": (1e-7, 0.0, 1.0)}),
    "adamw": ("AdamW", {}, {"beta_1": (0.9, 0.0, 1.0), "beta_2": (0.999, 0.0, 1.0),
                            "epsilon": (1e-7, 0.0, 1.0), "weight_decay": (0.004, 0.0, 1.0)}),
    "rmsprop": ("RMSprop", {}, {"rho": (0.9, 0.0, 1.0), "momentum": (0.0, 0.0, 1.0),
                                "epsilon": (1e-7, 0.0, 1.0)}),
}.items():
    OPTIMIZERS.add(_name, _spec)
# Which argument a cycled momentum replaces, per optimizer.
CYCLED = {"momentum": "momentum", "nesterov": "momentum", "adam": "beta_1", "adamw": "beta_1"}


def names() -> list[str]:
    return OPTIMIZERS.names()


def describe() -> list[dict[str, Any]]:
    return [{"name": n, "parameters": [{"name": p, "default": d, "low": lo, "high": hi}
                                       for p, (d, lo, hi) in spec[2].items()]}
            for n, spec in OPTIMIZERS.items()]


def resolve_params(name: str, params: Mapping[str, Any] | None) -> dict[str, float]:
    """Defaults filled in, every value checked against its range."""
    allowed = OPTIMIZERS.get(name)[2]
    out = {p: d for p, (d, _, _) in allowed.items()}
    for key, value in (params or {}).items():
        field = f"optimizer.params.{key}"
        if key not in allowed:
            hint = " (Keras 3 ignores `decay`; use a schedule)" if key == "decay" else ""
            raise TrainingError(f"{name}: unknown parameter `{key}`{hint}. Known parameters: "
                                f"{', '.join(allowed) or 'none'}", field=field)
        _, low, high = allowed[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not low <= value < high:
            raise TrainingError(f"{name}: argument `{key}` must be in [{low}, {high}). "
                                f"Received: {key}={value!r}", field=field)
        out[key] = float(value)
    return out


def build(name: str, params: Mapping[str, Any] | None, learning_rate: Any,
          momentum_schedule: Any = None) -> Any:
    """A Keras optimizer; with `momentum_schedule` its momentum (or beta_1) follows it."""
    resolved = resolve_params(name, params)
    cls_name, fixed, _ = OPTIMIZERS.get(name)
    if momentum_schedule is not None:
        if name not in CYCLED:
            raise TrainingError(f"Cycling momentum needs one of {', '.join(CYCLED)}. "
                                f"Received: optimizer={name!r}", field="optimizer")
        from lrsearch.cycled_momentum import cycled_optimizer

        return cycled_optimizer(cls_name, momentum_schedule, learning_rate=learning_rate,
                                **fixed, **resolved)
    import keras

    return getattr(keras.optimizers, cls_name)(learning_rate=learning_rate, **fixed, **resolved)
