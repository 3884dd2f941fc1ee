"""B4, API latency: p50 and p99 of `GET /v1/studies/{id}` with 64 concurrent clients (each
sends its next request when the previous answer arrives), with the workers paused ("idle") and
while a worker trains on the same machine ("busy"), and the ratio busy / idle of the p99s.

The API is one `lrsearch api` process (uvicorn) on the one-machine default, SQLite in WAL mode.
The worker runs a long study; idle and busy phases are interleaved by stopping and continuing
the worker's process group (SIGSTOP / SIGCONT), so both see the same database and the same
warm API process. The load generator (asyncio + httpx) runs on the same 2 cores: on this
machine the figures include its cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
from typing import Any

import httpx

from bench.common import Ratio, percentile, service, write_result

CLIENTS = 64


async def _load(url: str, path: str, clients: int, per_client: int) -> list[float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        async def client() -> None:
            for _ in range(per_client):
                start = time.perf_counter()
                r = await http.get(path)
                latencies.append(time.perf_counter() - start)
                r.raise_for_status()

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def measure(url: str, path: str, clients: int, per_client: int) -> list[float]:
    return asyncio.run(_load(url, path, clients, per_client))


def main(smoke: bool = False, repeats: int = 5) -> dict[str, Any]:
    repeats = 2 if smoke else repeats
    clients, per_client = (8, 5) if smoke else (CLIENTS, 40)
    p99 = Ratio("B4 API p99 latency, busy / idle", "p99 while a worker trains",
                "p99 with the worker paused")
    phases: list[dict[str, Any]] = []
    with service(lease_seconds="600") as svc:
        worker = svc.start_worker()
        study_id = svc.submit({"family": "constant", "dataset": "digits", "epochs": 1000,
                               "batch_size": 16, "n_trials": 1000,
                               "pruner": {"name": "none"}})
        path = f"/v1/studies/{study_id}"
        deadline = time.monotonic() + 120
        with svc.http() as h:  # busy means a trial is really training
            while h.get(path).json()["counts"]["running"] == 0:
                assert time.monotonic() < deadline, "the worker never started a trial"
                time.sleep(0.5)
        time.sleep(3)
        measure(svc.url, path, clients, 3)  # warm the API's connection pool and code paths

        def phase(busy: bool) -> float:
            os.killpg(worker.pid, signal.SIGCONT if busy else signal.SIGSTOP)
            time.sleep(1.0)
            lat = measure(svc.url, path, clients, per_client)
            phases.append({"busy": busy, "requests": len(lat),
                           "p50_ms": 1000 * statistics.median(lat),
                           "p99_ms": 1000 * percentile(lat, 99),
                           "max_ms": 1000 * max(lat)})
            return phases[-1]["p99_ms"]

        for i in range(repeats):
            order = [True, False] if i % 2 == 0 else [False, True]
            got = {busy: phase(busy) for busy in order}
            p99.pairs.append((got[True], got[False]))
        os.killpg(worker.pid, signal.SIGCONT)
        with svc.http() as h:
            h.post(f"{path}/cancel")
    idle = [p for p in phases if not p["busy"]]
    busy = [p for p in phases if p["busy"]]
    summary = {
        **p99.summary(),
        "idle_p50_ms": statistics.median(p["p50_ms"] for p in idle),
        "idle_p99_ms": statistics.median(p["p99_ms"] for p in idle),
        "busy_p50_ms": statistics.median(p["p50_ms"] for p in busy),
        "busy_p99_ms": statistics.median(p["p99_ms"] for p in busy),
        "idle_p99_target": "<= 50 ms", "clients": clients, "requests_per_client": per_client,
        "phases": phases}
    print(p99.line())
    print(f"  idle p50 {summary['idle_p50_ms']:.1f} ms, p99 {summary['idle_p99_ms']:.1f} ms "
          f"(target p99 <= 50 ms); busy p50 {summary['busy_p50_ms']:.1f} ms, p99 "
          f"{summary['busy_p99_ms']:.1f} ms; {clients} clients")
    write_result("b4_api_latency", {"figures": [summary]}, smoke)
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    main(args.smoke, args.repeats)
