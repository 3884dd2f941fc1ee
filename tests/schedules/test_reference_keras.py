"""Each family the issue table ties to a Keras schedule equals it to 1e-6 relative at every step.

Keras computes in the dtype of its initial learning rate; we hand it float64 so that the
comparison measures the formula, not float32 rounding (the export, which runs in float32, is
covered by test_properties.py).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from lrsearch.schedules import curve

KS = keras.optimizers.schedules
SPE, EPOCHS = 7, 12
S = SPE * EPOCHS
F64 = np.float64


def keras_curve(schedule: KS.LearningRateSchedule, steps: int = S) -> np.ndarray:
    return np.array([float(schedule(np.float64(s))) for s in range(steps)])


def ours(name: str, params: dict) -> np.ndarray:
    return curve(name, params, steps_per_epoch=SPE, epochs=EPOCHS)


def assert_rel(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize("per_epoch", [True, False])
def test_time_decay_is_inverse_time_decay(per_epoch: bool) -> None:
    k = KS.InverseTimeDecay(F64(0.1), SPE, 0.3, staircase=per_epoch)
    assert_rel(
        ours("time_decay", {"lr0": 0.1, "decay_rate": 0.3, "per_epoch": per_epoch}), keras_curve(k)
    )


@pytest.mark.parametrize("per_epoch", [True, False])
def test_exponential_is_exponential_decay(per_epoch: bool) -> None:
    k = KS.ExponentialDecay(F64(0.1), SPE, math.exp(-0.25), staircase=per_epoch)
    assert_rel(ours("exponential", {"lr0": 0.1, "k": 0.25, "per_epoch": per_epoch}), keras_curve(k))


@pytest.mark.parametrize("power", [1.0, 0.5, 2.0, 5.0])
def test_polynomial_is_polynomial_decay(power: float) -> None:
    k = KS.PolynomialDecay(F64(0.1), S, 0.001, power=power)
    assert_rel(ours("polynomial", {"lr0": 0.1, "end_lr": 0.001, "power": power}), keras_curve(k))


def test_linear_is_polynomial_decay_power_one() -> None:
    k = KS.PolynomialDecay(F64(0.05), S, 0.0, power=1.0)
    assert_rel(ours("linear", {"lr0": 0.05}), keras_curve(k))


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_cosine_without_warmup_is_cosine_decay(alpha: float) -> None:
    k = KS.CosineDecay(F64(0.2), S, alpha=alpha)
    assert_rel(ours("cosine", {"peak_lr": 0.2, "alpha": alpha}), keras_curve(k))


@pytest.mark.parametrize("warmup_epochs,start", [(1, 0.0), (2.5, 0.01), (11, 0.05)])
def test_cosine_with_warmup_is_cosine_decay_with_warmup_target(
    warmup_epochs: float, start: float
) -> None:
    W = math.floor(warmup_epochs * SPE + 0.5)
    k = KS.CosineDecay(F64(start), S - W, alpha=0.05, warmup_target=0.2, warmup_steps=W)
    p = {"peak_lr": 0.2, "alpha": 0.05, "warmup_epochs": warmup_epochs, "warmup_start_lr": start}
    assert_rel(ours("cosine", p), keras_curve(k))


@pytest.mark.parametrize(
    "first,t_mul,m_mul,alpha",
    [
        (1.0, 1.0, 1.0, 0.0),
        (1.0, 2.0, 1.0, 0.0),
        (0.5, 2.0, 0.7, 0.1),
        (2.0, 1.5, 0.9, 0.0),
        (1.0, 3.0, 0.5, 0.2),
    ],
)
def test_cosine_restarts_is_cosine_decay_restarts(
    first: float, t_mul: float, m_mul: float, alpha: float
) -> None:
    F = math.floor(first * SPE + 0.5)
    k = KS.CosineDecayRestarts(F64(0.1), F, t_mul=t_mul, m_mul=m_mul, alpha=alpha)
    p = {"lr0": 0.1, "first_cycle_epochs": first, "t_mul": t_mul, "m_mul": m_mul, "alpha": alpha}
    assert_rel(ours("cosine_restarts", p), keras_curve(k))
