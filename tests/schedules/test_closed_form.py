"""Closed-form values of every family, including the seed articles' tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrsearch.schedules import curve, momentum_curve


def per_epoch(name: str, params: dict, epochs: int, spe: int = 1) -> np.ndarray:
    """The LR at the first step of each epoch."""
    return curve(name, params, steps_per_epoch=spe, epochs=epochs)[::spe]


def test_constant() -> None:
    assert np.all(curve("constant", {"lr": 0.01}, steps_per_epoch=3, epochs=50) == 0.01)


def test_seed_000_step_decay_table() -> None:
    lrs = per_epoch("step_decay", {"lr0": 0.1, "drop": 0.5, "epochs_drop": 10}, 50, spe=7)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[9] == pytest.approx(0.1)  # the first drop is AT epoch 10, not before
    assert lrs[10] == pytest.approx(0.05)
    assert lrs[25] == pytest.approx(0.025)
    assert lrs[49] == pytest.approx(0.00625)


def test_seed_000_exponential_table() -> None:
    lrs = per_epoch("exponential", {"lr0": 0.1, "k": 0.1}, 50)
    assert lrs[[0, 10, 25]] == pytest.approx([0.1, 0.0368, 0.0082], abs=5e-5)
    assert lrs[10] == pytest.approx(0.1 * math.exp(-1.0), rel=1e-12)


def test_seed_000_time_decay_table() -> None:
    # lr0 = 0.1, decay = lr0 / epochs = 0.002 per epoch: 0.1, 0.098, 0.095, 0.091 at 0/10/25/49.
    lrs = per_epoch("time_decay", {"lr0": 0.1, "decay_rate": 0.1 / 50}, 50)
    expected = [0.1 / (1 + 0.002 * e) for e in (0, 10, 25, 49)]
    assert lrs[[0, 10, 25, 49]] == pytest.approx(expected, rel=1e-12)


def test_time_decay_is_not_the_seed_002_running_product() -> None:
    # Seed 002 multiplied lr0 into the running value every epoch; the family must not.
    lrs = per_epoch("time_decay", {"lr0": 0.001, "decay_rate": 0.1}, 5)
    assert lrs == pytest.approx([0.001 / (1 + 0.1 * e) for e in range(5)], rel=1e-12)


def test_time_decay_continuous_changes_within_an_epoch() -> None:
    lrs = curve(
        "time_decay",
        {"lr0": 0.1, "decay_rate": 0.5, "per_epoch": False},
        steps_per_epoch=4,
        epochs=2,
    )
    assert lrs == pytest.approx([0.1 / (1 + 0.5 * s / 4) for s in range(8)], rel=1e-12)


def test_hold_exponential_is_continuous_at_the_hold_boundary() -> None:
    # Seed 002's snippet jumps from lr0 to lr0*exp(-k*hold) at the boundary; ours is continuous.
    lrs = per_epoch("hold_exponential", {"lr0": 0.001, "hold_epochs": 10, "k": 0.1}, 20)
    assert np.all(lrs[:11] == 0.001)
    assert lrs[11] == pytest.approx(0.001 * math.exp(-0.1), rel=1e-12)
    assert lrs[15] == pytest.approx(0.001 * math.exp(-0.5), rel=1e-12)


def test_linear_and_polynomial() -> None:
    S = 20
    lin = curve("linear", {"lr0": 0.1}, steps_per_epoch=4, epochs=5)
    assert lin == pytest.approx([0.1 * (1 - s / S) for s in range(S)], rel=1e-12)
    poly = curve(
        "polynomial", {"lr0": 0.1, "end_lr": 0.01, "power": 5.0}, steps_per_epoch=4, epochs=5
    )
    assert poly == pytest.approx([0.09 * (1 - s / S) ** 5 + 0.01 for s in range(S)], rel=1e-12)


def test_cosine_with_warmup() -> None:
    p = {"peak_lr": 0.2, "alpha": 0.1, "warmup_epochs": 1, "warmup_start_lr": 0.02}
    lrs = curve("cosine", p, steps_per_epoch=4, epochs=5)
    W, S = 4, 20
    assert lrs[:W] == pytest.approx([0.02 + 0.18 * s / W for s in range(W)], rel=1e-12)
    decay = [
        0.2 * (0.9 * 0.5 * (1 + math.cos(math.pi * (s - W) / (S - W))) + 0.1) for s in range(W, S)
    ]
    assert lrs[W:] == pytest.approx(decay, rel=1e-12)


def test_seed_001_snapshot_ensemble_is_cosine_restarts_special_case() -> None:
    F = 6  # 2 epochs x 3 steps
    lrs = curve(
        "cosine_restarts",
        {"lr0": 0.1, "first_cycle_epochs": 2, "t_mul": 1.0, "m_mul": 1.0, "alpha": 0.0},
        steps_per_epoch=3,
        epochs=8,
    )
    expected = [0.1 / 2 * (math.cos(math.pi * (s % F) / F) + 1) for s in range(24)]
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_cosine_restarts_geometric_cycles_restart_at_the_right_steps() -> None:
    # t_mul=2, F=4: cycles start at steps 0, 4, 12, 28; each restart is back at lr0 * m_mul**i.
    lrs = curve(
        "cosine_restarts",
        {"lr0": 1.0, "first_cycle_epochs": 1, "t_mul": 2.0, "m_mul": 0.5},
        steps_per_epoch=4,
        epochs=8,
    )
    assert lrs[[0, 4, 12, 28]] == pytest.approx([1.0, 0.5, 0.25, 0.125], rel=1e-12)
    assert lrs[8] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 4 / 8)), rel=1e-12)


def test_triangle() -> None:
    lrs = curve(
        "triangle",
        {"peak_lr": 0.1, "warmup_epochs": 2, "start_lr": 0.0, "end_lr": 0.01},
        steps_per_epoch=5,
        epochs=6,
    )
    W, S = 10, 30
    assert lrs[:W] == pytest.approx([0.1 * s / W for s in range(W)], abs=1e-15)
    assert lrs[W] == pytest.approx(0.1)
    assert lrs[W:] == pytest.approx(
        [0.1 + (0.01 - 0.1) * (s - W) / (S - W) for s in range(W, S)], rel=1e-12
    )


def test_seed_002_rampup_exp_one_cycle() -> None:
    p = {
        "start_lr": 1e-4,
        "min_lr": 1e-5,
        "max_lr": 1e-3,
        "rampup_epochs": 10,
        "sustain_epochs": 0,
        "exp_decay": 0.8,
    }
    lrs = per_epoch("rampup_exp", p, 30, spe=2)
    for e in range(30):
        if e < 10:
            want = (1e-3 - 1e-4) / 10 * e + 1e-4
        else:
            want = (1e-3 - 1e-5) * 0.8 ** (e - 10) + 1e-5
        assert lrs[e] == pytest.approx(want, rel=1e-12), e


def test_wsd_phases() -> None:
    # S = 100, W = 10, D = 20, H = 70; min_lr_ratio 0.1; linear decay.
    p = {
        "peak_lr": 1.0,
        "warmup_frac": 0.1,
        "decay_frac": 0.2,
        "decay_shape": "linear",
        "min_lr_ratio": 0.1,
    }
    lrs = curve("wsd", p, steps_per_epoch=10, epochs=10)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.1 + 0.9 * 0.5)
    assert np.all(lrs[10:80] == 1.0)
    assert lrs[90] == pytest.approx(0.1 + 0.9 * 0.5)
    sqrt = curve("wsd", {**p, "decay_shape": "1-sqrt"}, steps_per_epoch=10, epochs=10)
    assert sqrt[85] == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(0.25)))
    cos = curve("wsd", {**p, "decay_shape": "cosine"}, steps_per_epoch=10, epochs=10)
    assert cos[90] == pytest.approx(0.1 + 0.9 * 0.5)


def test_piecewise_constant_changes_at_the_boundary_epoch() -> None:
    p = {"boundaries_epochs": [2, 5], "values": [0.1, 0.01, 0.001]}
    lrs = per_epoch("piecewise", p, 8, spe=3)
    assert lrs.tolist() == [0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001]
    steps = curve("piecewise", p, steps_per_epoch=3, epochs=8)
    assert steps[5] == 0.1 and steps[6] == 0.01  # step 6 is the first of epoch 2


def test_piecewise_linear_interpolates_between_knots() -> None:
    p = {"boundaries_epochs": [2, 4], "values": [0.1, 0.3, 0.2], "interpolation": "linear"}
    lrs = curve("piecewise", p, steps_per_epoch=2, epochs=6)
    assert lrs[:4] == pytest.approx([0.1, 0.15, 0.2, 0.25])
    assert lrs[4:8] == pytest.approx([0.3, 0.275, 0.25, 0.225])
    assert lrs[8:] == pytest.approx([0.2] * 4)


def test_one_cycle_endpoints() -> None:
    lrs = curve("one_cycle", {"max_lr": 1.0}, steps_per_epoch=10, epochs=10)
    assert lrs[0] == pytest.approx(1.0 / 25)
    assert lrs[29] == pytest.approx(1.0)  # pct_start * S - 1
    assert lrs[-1] == pytest.approx(1.0 / 25 / 1e4)


def test_one_cycle_momentum_moves_inversely() -> None:
    p = {"max_lr": 1.0, "cycle_momentum": True}
    mom = momentum_curve("one_cycle", p, steps_per_epoch=10, epochs=10)
    assert mom is not None
    assert mom[0] == pytest.approx(0.95) and mom[29] == pytest.approx(0.85)
    assert mom[-1] == pytest.approx(0.95)
    assert momentum_curve("one_cycle", {"max_lr": 1.0}, steps_per_epoch=10, epochs=10) is None


def test_cyclical_triangular() -> None:
    lrs = curve(
        "cyclical",
        {"base_lr": 0.1, "max_lr": 0.5, "step_size_up_epochs": 1},
        steps_per_epoch=4,
        epochs=4,
    )
    one = [0.1, 0.2, 0.3, 0.4, 0.5, 0.4, 0.3, 0.2]
    assert lrs == pytest.approx(one + one)


def test_reduce_on_plateau_curve_is_lr0_before_adaptation() -> None:
    lrs = curve("reduce_on_plateau", {"lr0": 0.05}, steps_per_epoch=3, epochs=4)
    assert np.all(lrs == 0.05)


def test_fractional_durations_round_half_up() -> None:
    # 0.5 epoch x 5 steps = 2.5 steps -> 3 (Python's round() would give 2).
    lrs = curve("triangle", {"peak_lr": 0.3, "warmup_epochs": 0.5}, steps_per_epoch=5, epochs=2)
    assert lrs[:4] == pytest.approx([0.0, 0.1, 0.2, 0.3])
