"""B5, worker scaling: trials per minute with 2 workers divided by trials per minute with 1
worker. On this 2-core machine each worker (and its training child) is pinned to its own core
with `taskset` and runs TensorFlow with one intra-op and one inter-op thread; on a GPU machine
each worker gets one GPU (`--gpu N`, see BENCHMARKS.md).

Each phase starts its workers fresh, warms their child processes with one tiny trial each,
then runs a study of identical trials (a constant LR, digits, mlp); throughput is the number of
trials over the span from the first trial's start to the last trial's end, read from the
trial rows. Phases with 1 and 2 workers alternate, on the API's SQLite database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bench.common import Ratio, Service, command_line, interleave, service, write_result


def _study(n: int, epochs: int, batch_size: int) -> dict[str, Any]:
    return {"family": "constant", "dataset": "digits", "epochs": epochs,
            "batch_size": batch_size, "n_trials": n, "sampler": {"name": "random"},
            "pruner": {"name": "none"}, "search_space": {"constant": {"lr": {"value": 0.05}}}}


def trials_per_minute(svc: Service, workers: int, n: int, epochs: int, batch_size: int,
                      gpus: int) -> float:
    for i in range(workers):
        if gpus:
            svc.start_worker(CUDA_VISIBLE_DEVICES=str(i % gpus))
        else:
            svc.start_worker(cpu=i)
    try:
        warm = svc.submit(_study(workers * 2, 1, 256))  # both children start TensorFlow
        svc.wait(warm)
        names = {t["worker"] for t in svc.trials(warm)}
        if len(names) < workers:  # one worker took every warm-up trial: warm the other too
            svc.wait(svc.submit(_study(workers * 2, 1, 256)))
        sid = svc.submit(_study(n, epochs, batch_size))
        done = svc.wait(sid)
        assert done["status"] == "succeeded", done
        rows = svc.trials(sid)
    finally:
        svc.stop_workers()
    start = min(datetime.fromisoformat(t["started_at"]) for t in rows)
    end = max(datetime.fromisoformat(t["finished_at"]) for t in rows)
    used = {t["worker"] for t in rows}
    assert len(used) == workers, f"{len(used)} of {workers} workers ran trials"
    return n / ((end - start).total_seconds() / 60)


def main(smoke: bool = False, repeats: int = 5, gpus: int = 0) -> dict[str, Any]:
    n, epochs, batch_size = (4, 1, 128) if smoke else (12, 6, 32)
    repeats = 2 if smoke else repeats
    ratio = Ratio("B5 worker scaling", "trials/min with 2 workers", "trials/min with 1 worker",
                  target=">= 1.7")
    with service() as svc:
        rows = interleave(repeats,
                          lambda: trials_per_minute(svc, 2, n, epochs, batch_size, gpus),
                          lambda: trials_per_minute(svc, 1, n, epochs, batch_size, gpus))
    ratio.pairs = [(a, b) for a, b in rows]
    summary = {**ratio.summary(), "config": {"trials_per_phase": n, "epochs": epochs,
                                             "batch_size": batch_size, "gpus": gpus,
                                             "pinning": "taskset, 1 TF thread" if not gpus
                                             else "one GPU per worker"}}
    print(ratio.line())
    print(f"  {summary['numerator_median']:.1f} vs {summary['denominator_median']:.1f} "
          "trials/min")
    write_result("b5_scaling", {"figures": [summary]}, smoke)
    return summary


if __name__ == "__main__":
    command_line(main, __doc__, repeats=5,
                 gpus=(int, 0, "one GPU per worker"))
