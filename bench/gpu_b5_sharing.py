"""GPU tier, B5 workers sharing a GPU: trials per hour with 1, 2 and 4 workers on one GPU
(`lrsearch worker --gpu G --per-gpu N`, as `lrsearch serve --per-gpu N` starts them: each
takes its share of the GPU's memory), through the real service (API and workers as separate
processes on SQLite). Figures: trials/hour with N workers over trials/hour with 1, for N = 2
and 4.

Each phase starts its workers fresh, waits until every one has registered (its child has
imported Keras on its backend), then runs `repeats` studies, one after another, of identical
trials: ResNet-20 on the
generated 32x32x3 images (bench/gpu.py) uploaded as a dataset, a constant LR, fp32 with Keras'
own XLA choice. Throughput is the number of trials over the span from the first trial's start
to the last trial's end, read from the trial rows; every trial builds and compiles its model,
as in any study, so sharing overlaps one worker's compiling with another's training.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import gpu
from bench.common import Ratio, Service, command_line, service, write_result
from service.cli import visible_gpus


def start_workers(svc: Service, n: int) -> None:
    """`n` workers sharing the first GPU (unpinned without a GPU: the smoke run on a CPU)."""
    ids = visible_gpus()
    pin = ["--gpu", str(ids[0])] if ids else []
    for _ in range(n):
        svc.start_worker(*pin, "--per-gpu", str(n), "--backend", gpu.backend())


def wait_registered(svc: Service, n: int, timeout: float = 300) -> None:
    """Until `n` live workers have published what they can load (their children started)."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from service.workers.models import WorkerRow

    engine = create_engine(svc.env["LRSEARCH_DATABASE_URL"])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with Session(engine) as s:
                ready = [r for r in s.scalars(select(WorkerRow).where(
                    WorkerRow.stopped_at.is_(None))) if r.capabilities is not None]
            if len(ready) >= n:
                return
            if any(p.poll() is not None for p in svc.workers):
                break
            time.sleep(0.5)
    finally:
        engine.dispose()
    logs = "\n".join((svc.folder / f"worker{i}.log").read_text(errors="replace")[-2000:]
                     for i in range(len(svc.workers)))
    raise RuntimeError(f"{n} workers did not register:\n{logs}")


def study(n: int, epochs: int, batch_size: int, model: str) -> dict[str, Any]:
    return {"family": "constant", "dataset": gpu.DATASET, "model": {"name": model},
            "epochs": epochs, "batch_size": batch_size, "n_trials": n,
            "sampler": {"name": "random"}, "pruner": {"name": "none"},
            "search_space": {"constant": {"lr": {"value": 0.01}}}}


def rate(rows: list[dict[str, Any]]) -> float:
    """Trials per hour over the span from the first trial's start to the last one's end."""
    begin = min(datetime.fromisoformat(t["started_at"]) for t in rows)
    end = max(datetime.fromisoformat(t["finished_at"]) for t in rows)
    return len(rows) / ((end - begin).total_seconds() / 3600)


def phase(svc: Service, workers: int, repeats: int, n: int, epochs: int, batch_size: int,
          model: str) -> list[float]:
    """Trials per hour of `repeats` studies of `n` trials each, run one after another by
    `workers` fresh workers sharing the GPU."""
    start_workers(svc, workers)
    rates = []
    try:
        wait_registered(svc, workers)
        for _ in range(repeats):
            sid = svc.submit(study(n, epochs, batch_size, model))
            done = svc.wait(sid, poll=1.0)
            assert done["status"] == "succeeded", done
            rates.append(rate([t for t in svc.trials(sid)
                               if t.get("started_at") and t.get("finished_at")]))
    finally:
        svc.stop_workers()
    return rates


def main(smoke: bool = False, repeats: int = 2, epochs: int = 2, train: int = 4096,
         batch_size: int = 128, model: str = "resnet20", trials: int = 1,
         workers: str = "1,2,4") -> list[dict[str, Any]]:
    """`trials` per worker in each study (N workers run studies of N * trials)."""
    if smoke:
        repeats, epochs, train, batch_size, model, trials, workers = \
            2, 1, 64, 32, "mlp", 1, "1,2"
    counts = [int(w) for w in workers.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="lrsearch-gpu-b5-"))
    path = gpu.write_problem(folder, train, max(64, train // 8))
    # The API process imports Keras too: on JAX it must not take the GPU's memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    with service() as svc:
        with svc.http() as h, open(path, "rb") as f:
            r = h.post("/v1/datasets", data={"name": gpu.DATASET},
                       files={"file": (path.name, f.read())})
            assert r.status_code == 201, r.text
        # Workers start once per count (a start costs seconds of the tier's minutes); the
        # repeats of a count run back to back, and pair with the baseline's by their order.
        per_count = {k: phase(svc, k, repeats, k * trials, epochs, batch_size, model)
                     for k in counts}
    rows = list(zip(*(per_count[k] for k in counts), strict=True))
    figures = []
    for i, k in enumerate(counts[1:], start=1):
        ratio = Ratio(f"GPU B5 {k} workers sharing a GPU ({model})",
                      f"trials/hour with {k} workers", f"trials/hour with {counts[0]} worker")
        ratio.pairs = [(row[i], row[0]) for row in rows]
        print(ratio.line())
        figures.append({**ratio.summary(), "config": {
            "model": model, "epochs": epochs, "batch_size": batch_size, "train_images": train,
            "trials_per_phase": k * trials, "backend": gpu.backend()}})
    per_hour = {k: sorted(row[i] for row in rows) for i, k in enumerate(counts)}
    notes = [f"B5 {k} worker(s) on one GPU: {v[len(v) // 2]:.0f} trials/hour "
             f"({', '.join(f'{x:.0f}' for x in v)})" for k, v in per_hour.items()]
    for line in notes:
        print(f"  {line}")
    write_result("gpu_b5_sharing", {"figures": figures, "trials_per_hour": per_hour,
                                    "notes": notes}, smoke)
    return figures


if __name__ == "__main__":
    command_line(main, __doc__, repeats=2, epochs=(int, 2, "epochs per trial"),
                 train=(int, 4096, "training images"), batch_size=(int, 128, "batch size"),
                 model=(str, "resnet20", "built-in model"),
                 trials=(int, 1, "trials per worker in each study"),
                 workers=(str, "1,2,4", "worker counts, the first is the baseline"))
