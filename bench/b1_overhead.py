"""B1, service overhead: the wall time of one trial through the service (claim to recorded
result: the trial row's duration) divided by a bare `model.fit` of the same configuration in a
warm process (this one). Also reported: the fixed per-trial cost in seconds (service minus
bare), and submit-to-succeeded as a user sees it.

Two trials of about 10 s on the 2-core machine, both digits, SGD, a cosine schedule (Keras'
CosineDecay on both sides: the trial's exported schedule, built with the same function the
bare fit calls): 100 short
epochs (mlp, batch size 16, ~0.14 s each: the worst case for the per-epoch bookkeeping, which
is a round trip to the worker, a curve point and an Optuna report), and 30 longer epochs
(small_cnn, batch size 8, ~0.3 s each). One worker; its child is warmed by one trial first.
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any

from bench.common import Ratio, command_line, interleave, service, write_result

FAMILY = "cosine"
PARAMS = {"peak_lr": 0.05, "alpha": 0.0, "warmup_epochs": 0.0, "warmup_start_lr": 0.0}


CONFIGS = {"100 short epochs (mlp)": ("mlp", 100, 16),
           "30 longer epochs (small_cnn)": ("small_cnn", 30, 8)}


def bare_fit(model_name: str, epochs: int, batch_size: int, seed: int) -> float:
    """Load, build, compile and fit as the trial does, without our callbacks or the service."""
    import keras

    from lrsearch import datasets, optimizers, schedules
    from lrsearch.models.resolve import compiled_model
    from lrsearch.spec import RunSpec
    from lrsearch.training import pipeline, steps_per_epoch

    start = time.perf_counter()
    data = datasets.load("digits", seed=seed)
    keras.utils.set_random_seed(seed)
    lr = schedules.to_keras(FAMILY, PARAMS, epochs=epochs,
                            steps_per_epoch=steps_per_epoch(len(data.x_train), batch_size))
    model = compiled_model(RunSpec.builtin("digits", model_name, batch_size=batch_size,
                                           seed=seed),
                           data.input_shape, data.head, optimizers.build("sgd", {}, lr))
    model.fit(pipeline(data.x_train, data.y_train, batch_size, seed),
              validation_data=pipeline(data.x_val, data.y_val, batch_size, None),
              epochs=epochs, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    keras.backend.clear_session()
    return seconds


def study(epochs: int, batch_size: int, seed: int, model_name: str = "mlp") -> dict[str, Any]:
    return {"family": FAMILY, "dataset": "digits", "epochs": epochs,
            "model": {"name": model_name},
            "batch_size": batch_size, "n_trials": 1, "seed": seed,
            "sampler": {"name": "random"}, "pruner": {"name": "none"},
            "search_space": {FAMILY: {k: {"value": v} for k, v in PARAMS.items()}}}


def main(smoke: bool = False, repeats: int = 7) -> list[dict[str, Any]]:
    configs = {"2 epochs (mlp, smoke)": ("mlp", 2, 64)} if smoke else CONFIGS
    repeats = 2 if smoke else repeats
    figures = []
    with service() as svc:
        svc.start_worker()
        for label, (model_name, epochs, batch_size) in configs.items():
            ratio = Ratio(f"B1 service overhead, {label}", "trial through the service",
                          "bare model.fit", target="<= 1.05 for trials of 10 s or more")
            end_to_end: list[float] = []
            svc.wait(svc.submit(study(1, batch_size, 0, model_name)))  # warm the child
            bare_fit(model_name, 1, batch_size, 0)  # and this process

            def through_service(model_name: str = model_name, epochs: int = epochs,
                                batch_size: int = batch_size,
                                end_to_end: list[float] = end_to_end) -> float:
                start = time.perf_counter()
                sid = svc.submit(study(epochs, batch_size, 0, model_name))
                # Polled once a second: faster polling costs the API and this process CPU
                # that the trial's training would then miss (on 2 cores, a few per cent).
                done = svc.wait(sid, poll=1.0)
                end_to_end.append(time.perf_counter() - start)
                assert done["status"] == "succeeded", done
                return float(svc.trials(sid)[0]["duration_s"])

            rows = interleave(repeats, through_service,
                              functools.partial(bare_fit, model_name, epochs, batch_size, 0))
            ratio.pairs = [(a, b) for a, b in rows]
            fixed = sorted(a - b for a, b in rows)
            summary = ratio.summary()
            summary["fixed_cost_s_median"] = statistics.median(fixed)
            summary["fixed_cost_s_per_epoch_ms"] = 1000 * statistics.median(fixed) / epochs
            summary["fixed_cost_s"] = fixed
            summary["submit_to_succeeded_s"] = end_to_end
            summary["config"] = {"dataset": "digits", "model": model_name, "optimizer": "sgd",
                                 "epochs": epochs, "batch_size": batch_size}
            print(ratio.line())
            print(f"  fixed per-trial cost {summary['fixed_cost_s_median']:.2f} s median "
                  f"({summary['fixed_cost_s_per_epoch_ms']:.1f} ms per epoch; bare fit "
                  f"{summary['denominator_median']:.2f} s); submit to succeeded "
                  f"{statistics.median(end_to_end):.2f} s median")
            figures.append(summary)
    write_result("b1_overhead", {"figures": figures}, smoke)
    return figures


if __name__ == "__main__":
    command_line(main, __doc__)
