"""GPU tier, B3 range-test cost: the wall time of an LR range test through the worker's path
(`lrsearch.range_test.runner.run`: data, model, the sweep of `num_iter` steps, its analysis)
divided by the wall time of one training epoch of as many steps through the training path
(`lrsearch.training.train` on `num_iter` batches of the same generated images, then its small
validation pass). Both sides load, build and compile their model inside the timer, as a
worker's job does; the ratio says what a range test costs next to the epochs it saves.

ResNet-20 (bench/gpu.py's problem), SGD, fp32 with Keras' own XLA choice; an exponential
sweep 1e-5 -> 0.05, short of divergence, so every step of the ladder runs. Repeats
interleaved, alternating which goes first.
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import gpu
from bench.common import Ratio, command_line, interleave, write_result

ARM = gpu.Arm(mixed_precision=False, jit_compile=True)


def _spec(path: Path, model: str, batch_size: int) -> Any:
    spec = gpu.run_spec(path, model, batch_size, ARM)
    return spec.model_copy(update={"jit_compile": "auto"})


def range_test_seconds(path: Path, model: str, batch_size: int, num_iter: int) -> float:
    import keras

    from lrsearch.range_test import SweepSettings
    from lrsearch.range_test.runner import RangeTestConfig, run

    keras.backend.clear_session()
    start = time.perf_counter()
    result = run(RangeTestConfig(_spec(path, model, batch_size),
                                 settings=SweepSettings(1e-5, 0.05, num_iter)))
    seconds = time.perf_counter() - start
    steps = len(result["sweeps"][0]["lrs"])
    assert steps == num_iter, f"the sweep stopped at {steps} of {num_iter} steps"
    return seconds


def epoch_seconds(path: Path, model: str, batch_size: int) -> float:
    import keras

    from lrsearch.training import TrainConfig, train

    keras.backend.clear_session()
    start = time.perf_counter()
    train(TrainConfig(_spec(path, model, batch_size), schedule="constant",
                      schedule_params={"lr": 0.01}, epochs=1, seed=0))
    return time.perf_counter() - start


def main(smoke: bool = False, repeats: int = 3, num_iter: int = 100, batch_size: int = 128,
         model: str = "resnet20") -> list[dict[str, Any]]:
    if smoke:
        repeats, num_iter, batch_size, model = 2, 10, 16, "mlp"
    folder = Path(tempfile.mkdtemp(prefix="lrsearch-gpu-b3-"))
    # One epoch of the training side is num_iter batches; the validation set stays small.
    path = gpu.write_problem(folder, num_iter * batch_size, 2 * batch_size)
    ratio = Ratio(f"GPU B3 range test cost ({model})", "range test",
                  f"a training epoch of {num_iter} steps")
    ratio.pairs = [(a, b) for a, b in interleave(
        repeats, functools.partial(range_test_seconds, path, model, batch_size, num_iter),
        functools.partial(epoch_seconds, path, model, batch_size))]
    print(ratio.line())
    figures = [{**ratio.summary(), "config": {"model": model, "batch_size": batch_size,
                                              "num_iter": num_iter, "backend": gpu.backend()}}]
    write_result("gpu_b3_range_test", {"figures": figures}, smoke)
    return figures


if __name__ == "__main__":
    command_line(main, __doc__, repeats=3, num_iter=(int, 100, "sweep steps"),
                 batch_size=(int, 128, "batch size"), model=(str, "resnet20", "built-in model"))
