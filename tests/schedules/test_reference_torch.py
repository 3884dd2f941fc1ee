"""The families the issue table ties to PyTorch schedulers equal them at every step.

PyTorch computes in Python floats (float64), so the comparison is to 1e-6 relative. The LR of
step s is what the optimizer holds when its s-th step() runs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch==2.13.0 is a test dependency (dev extra)")

from lrsearch.schedules import curve, momentum_curve  # noqa: E402


def torch_curves(make: Callable, steps: int, momentum: float = 0.0) -> tuple[np.ndarray, ...]:
    """Run a PyTorch scheduler for `steps` optimizer steps; (lr, momentum) before each step."""
    weight = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([weight], lr=0.1, momentum=momentum)
    sched = make(opt)
    lrs, moms = [], []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    return np.array(lrs), np.array(moms)


def assert_rel(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize(
    "pct,div,final,anneal,three",
    [
        (0.3, 25.0, 1e4, "cos", False),
        (0.25, 10.0, 100.0, "linear", False),
        (0.3, 25.0, 1e4, "cos", True),
        (0.4, 5.0, 1e3, "linear", True),
    ],
)
def test_one_cycle_is_onecyclelr(
    pct: float, div: float, final: float, anneal: str, three: bool
) -> None:
    spe, epochs = 9, 7
    S = spe * epochs
    params = {
        "max_lr": 0.5,
        "pct_start": pct,
        "div_factor": div,
        "final_div_factor": final,
        "anneal": anneal,
        "three_phase": three,
        "cycle_momentum": True,
        "base_momentum": 0.8,
        "max_momentum": 0.93,
    }
    lrs, moms = torch_curves(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o,
            max_lr=0.5,
            total_steps=S,
            pct_start=pct,
            anneal_strategy=anneal,
            div_factor=div,
            final_div_factor=final,
            three_phase=three,
            cycle_momentum=True,
            base_momentum=0.8,
            max_momentum=0.93,
        ),
        S,
        momentum=0.9,
    )
    assert_rel(curve("one_cycle", params, steps_per_epoch=spe, epochs=epochs), lrs)
    ours_m = momentum_curve("one_cycle", params, steps_per_epoch=spe, epochs=epochs)
    assert ours_m is not None
    assert_rel(ours_m, moms)


def test_one_cycle_defaults_are_pytorch_defaults() -> None:
    spe, epochs = 10, 5
    lrs, _ = torch_curves(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.3, total_steps=spe * epochs, cycle_momentum=False
        ),
        spe * epochs,
    )
    assert_rel(curve("one_cycle", {"max_lr": 0.3}, steps_per_epoch=spe, epochs=epochs), lrs)


@pytest.mark.parametrize(
    "mode,gamma", [("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.99)]
)
@pytest.mark.parametrize("up,down", [(1.0, None), (0.5, 1.5)])
def test_cyclical_is_cycliclr(mode: str, gamma: float, up: float, down: float | None) -> None:
    spe, epochs = 6, 10
    up_steps = round(up * spe)
    down_steps = None if down is None else round(down * spe)
    lrs, _ = torch_curves(
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o,
            base_lr=0.01,
            max_lr=0.2,
            step_size_up=up_steps,
            step_size_down=down_steps,
            mode=mode,
            gamma=gamma,
            cycle_momentum=False,
        ),
        spe * epochs,
    )
    params = {
        "base_lr": 0.01,
        "max_lr": 0.2,
        "step_size_up_epochs": up,
        "step_size_down_epochs": down,
        "mode": mode,
        "gamma": gamma,
    }
    assert_rel(curve("cyclical", params, steps_per_epoch=spe, epochs=epochs), lrs)


def test_step_decay_is_steplr_stepped_per_epoch() -> None:
    spe, epochs = 5, 30
    weight = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([weight], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.3)
    expected = []
    for _ in range(epochs):
        expected += [opt.param_groups[0]["lr"]] * spe
        opt.step()
        sched.step()
    params = {"lr0": 0.1, "drop": 0.3, "epochs_drop": 7}
    assert_rel(curve("step_decay", params, steps_per_epoch=spe, epochs=epochs), np.array(expected))
