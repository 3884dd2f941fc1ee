"""B3, range-test cost: the wall time of an LR range test (`lr_find`: snapshot, the sweep with
one optimizer step and one loss read-back per learning rate, restore) divided by the wall time
of the same number of plain training steps (`model.fit` over that many batches), both on the
same kind of freshly compiled model in this warm process. Model building and the tracing of
the train function (one step) are outside both timers.

Digits, mlp, SGD, batch size 32, an exponential sweep 1e-5 -> 1 (no divergence on this task, so
every step of the ladder runs). A second figure runs the same on small_cnn, where a step costs
more and the per-step Python work weighs less."""

from __future__ import annotations

import functools
import time
from typing import Any

from bench.common import Ratio, command_line, interleave, write_result


def _model(name: str, data: Any) -> Any:
    from lrsearch import optimizers
    from lrsearch.models.resolve import compiled_model
    from lrsearch.spec import RunSpec

    return compiled_model(RunSpec.builtin(data.name, name), data.input_shape, data.head,
                          optimizers.build("sgd", {}, 1e-5))


def range_test_seconds(name: str, data: Any, num_iter: int) -> float:
    from lrsearch.range_test import SweepSettings
    from lrsearch.range_test.runner import lr_find
    from lrsearch.training import pipeline

    model = _model(name, data)
    warm = pipeline(data.x_train, data.y_train, 32, 0).repeat()
    model.fit(warm, epochs=1, steps_per_epoch=1, verbose=0)  # trace, untimed
    start = time.perf_counter()
    sweep = lr_find(model, data.x_train, data.y_train, SweepSettings(1e-5, 1.0, num_iter),
                    batch_size=32, seed=0)
    seconds = time.perf_counter() - start
    assert len(sweep.lrs) == num_iter, f"the sweep stopped at {len(sweep.lrs)} steps"
    return seconds


def plain_steps_seconds(name: str, data: Any, num_iter: int) -> float:
    from lrsearch.training import pipeline

    model = _model(name, data)
    ds = pipeline(data.x_train, data.y_train, 32, 0).repeat()
    model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)  # trace, untimed
    start = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=num_iter, verbose=0)
    return time.perf_counter() - start


def main(smoke: bool = False, repeats: int = 7) -> list[dict[str, Any]]:
    import keras

    from lrsearch import datasets

    num_iter = 30 if smoke else 300
    repeats = 2 if smoke else repeats
    data = datasets.load("digits", seed=0)
    figures = []
    for name in ("mlp",) if smoke else ("mlp", "small_cnn"):
        range_test_seconds(name, data, 10)  # warm: trace the train and test functions
        plain_steps_seconds(name, data, 10)
        ratio = Ratio(f"B3 range test cost ({name})", "range test",
                      f"{num_iter} plain training steps", target="<= 1.2")
        ratio.pairs = [(a, b) for a, b in interleave(
            repeats, functools.partial(range_test_seconds, name, data, num_iter),
            functools.partial(plain_steps_seconds, name, data, num_iter))]
        keras.backend.clear_session()
        print(ratio.line())
        figures.append({**ratio.summary(), "config": {"dataset": "digits", "model": name,
                                                      "batch_size": 32, "num_iter": num_iter}})
    write_result("b3_range_test", {"figures": figures}, smoke)
    return figures


if __name__ == "__main__":
    command_line(main, __doc__)
