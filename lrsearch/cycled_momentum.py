"""Keras optimizers whose momentum (SGD) or beta_1 (Adam, AdamW) follows a schedule of the step,
as PyTorch's OneCycleLR does with cycle_momentum=True.

Keras reads `momentum` and `beta_1` as Python floats that get baked into the compiled train
step, so a callback cannot change them; these subclasses evaluate the schedule at the
optimizer's own step counter inside the update instead.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


class CycledMomentumSGD(keras.optimizers.SGD):
    """SGD whose momentum at step s is momentum_schedule(s)."""

    def __init__(self, momentum_schedule: Any, **kwargs: Any) -> None:
        kwargs["momentum"] = float(momentum_schedule(0))  # non-zero: builds the velocities
        super().__init__(**kwargs)
        self.momentum_schedule = momentum_schedule

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        mu = ops.cast(self.momentum_schedule(self.iterations), variable.dtype)
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        m = self.momentums[self._get_variable_index(variable)]
        self.assign(m, ops.subtract(ops.multiply(m, mu), ops.multiply(g, lr)))
        if self.nesterov:
            self.assign_add(variable, ops.subtract(ops.multiply(m, mu), ops.multiply(g, lr)))
        else:
            self.assign_add(variable, m)


def _with_scheduled_beta_1(base: Any) -> type:
    class CycledBeta1(base):
        """Adam-family optimizer whose beta_1 at step s is momentum_schedule(s)."""

        def __init__(self, momentum_schedule: Any, **kwargs: Any) -> None:
            kwargs["beta_1"] = float(momentum_schedule(0))
            super().__init__(**kwargs)
            self.momentum_schedule = momentum_schedule

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
            # Adam's update only does arithmetic with beta_1, so a tensor works in its place.
            fixed: Any = getattr(self, "beta_1")  # noqa: B009 (typed as Any on purpose)
            self.beta_1 = ops.cast(self.momentum_schedule(self.iterations), variable.dtype)
            try:
                super().update_step(gradient, variable, learning_rate)
            finally:
                self.beta_1 = fixed

    CycledBeta1.__name__ = f"CycledMomentum{base.__name__}"
    return CycledBeta1


CLASSES: dict[str, type] = {
    "SGD": CycledMomentumSGD,
    "Adam": _with_scheduled_beta_1(keras.optimizers.Adam),
    "AdamW": _with_scheduled_beta_1(keras.optimizers.AdamW),
}


def cycled_optimizer(cls_name: str, momentum_schedule: Any, **kwargs: Any) -> Any:
    kwargs.pop("momentum", None)
    kwargs.pop("beta_1", None)
    return CLASSES[cls_name](momentum_schedule, **kwargs)
