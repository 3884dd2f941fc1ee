"""B1, service overhead: the wall time of one trial through the service (claim to recorded
result: the trial row's duration) divided by a bare `model.fit` of the same configuration in a
warm process (this one). Also reported: the fixed per-trial cost in seconds (service minus
bare), and submit-to-succeeded as a user sees it.

The trial: digits, mlp, SGD, a constant LR, batch size 16, 70 epochs (about 10 s on the 2-core
machine). One worker; its child process is warmed by one trial first.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import Ratio, interleave, service, write_result

LR = 0.05


def bare_fit(epochs: int, batch_size: int, seed: int) -> float:
    """Load, build, compile and fit as the trial does, without our callbacks or the service."""
    import keras

    from lrsearch import datasets, optimizers
    from lrsearch.training import compiled_model, pipeline

    start = time.perf_counter()
    data = datasets.load("digits", seed=seed)
    keras.utils.set_random_seed(seed)
    model = compiled_model(data, "mlp", {}, optimizers.build("sgd", {}, LR))
    model.fit(pipeline(data.x_train, data.y_train, batch_size, seed),
              validation_data=pipeline(data.x_val, data.y_val, batch_size, None),
              epochs=epochs, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    keras.backend.clear_session()
    return seconds


def study(epochs: int, batch_size: int, seed: int) -> dict[str, Any]:
    return {"family": "constant", "dataset": "digits", "epochs": epochs,
            "batch_size": batch_size, "n_trials": 1, "seed": seed,
            "sampler": {"name": "random"}, "pruner": {"name": "none"},
            "search_space": {"constant": {"lr": {"value": LR}}}}


def main(smoke: bool = False, repeats: int = 7) -> dict[str, Any]:
    epochs, batch_size = (2, 64) if smoke else (70, 16)
    repeats = 2 if smoke else repeats
    ratio = Ratio("B1 service overhead", "trial through the service", "bare model.fit",
                  target="<= 1.05 for trials of 10 s or more")
    end_to_end: list[float] = []
    with service() as svc:
        svc.start_worker()
        svc.wait(svc.submit(study(1, batch_size, 0)))  # warm the worker's child process
        bare_fit(1, batch_size, 0)  # and this process

        def through_service() -> float:
            start = time.perf_counter()
            sid = svc.submit(study(epochs, batch_size, 0))
            done = svc.wait(sid, poll=0.05)
            end_to_end.append(time.perf_counter() - start)
            assert done["status"] == "succeeded", done
            return float(svc.trials(sid)[0]["duration_s"])

        rows = interleave(repeats, through_service, lambda: bare_fit(epochs, batch_size, 0))
    ratio.pairs = [(a, b) for a, b in rows]
    fixed = sorted(a - b for a, b in rows)
    summary = ratio.summary()
    summary["fixed_cost_s_median"] = fixed[len(fixed) // 2]
    summary["fixed_cost_s"] = fixed
    summary["submit_to_succeeded_s"] = end_to_end
    summary["config"] = {"dataset": "digits", "model": "mlp", "optimizer": "sgd",
                         "epochs": epochs, "batch_size": batch_size}
    print(ratio.line())
    print(f"  fixed per-trial cost {summary['fixed_cost_s_median']:.2f} s median "
          f"(bare fit {summary['denominator_median']:.2f} s); submit to succeeded "
          f"{sorted(end_to_end)[len(end_to_end) // 2]:.2f} s median")
    write_result("b1_overhead", {"figures": [summary]}, smoke)
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    main(args.smoke, args.repeats)
