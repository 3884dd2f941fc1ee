"""B4, API latency: p50 and p99 of `GET /v1/studies/{id}` with 64 concurrent clients (each
sends its next request when the previous answer arrives), with the workers paused ("idle") and
while a worker trains on the same machine ("busy"), and the ratio busy / idle of the p99s.

The API is one `lrsearch api` process (uvicorn) on the one-machine default, SQLite in WAL mode.
The worker runs a long study; idle and busy phases are interleaved by stopping and continuing
the worker's process group (SIGSTOP / SIGCONT), so both see the same database and the same
warm API process. The load generator (64 keep-alive connections on asyncio streams, a minimal
HTTP client so that it costs little CPU) runs on the same 2 cores.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

from bench.common import Ratio, command_line, percentile, service, write_result

CLIENTS = 64


async def _client(host: str, port: int, request: bytes, n: int, out: list[float]) -> None:
    """One keep-alive HTTP/1.1 connection sending `n` requests one after another. A minimal
    client on purpose: httpx costs about a millisecond of CPU per request, and on a 2-core
    machine the load generator's own CPU would then be most of the measured latency."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(n):
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            out.append(time.perf_counter() - start)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {head!r}")
    finally:
        writer.close()


async def _load(url: str, path: str, clients: int, per_client: int) -> list[float]:
    parsed = urlsplit(url)
    request = (f"GET {path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
               "Accept: application/json\r\n\r\n").encode()
    latencies: list[float] = []
    await asyncio.gather(*(_client(parsed.hostname or "127.0.0.1", parsed.port or 80, request,
                                   per_client, latencies) for _ in range(clients)))
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
    command_line(main, __doc__, repeats=5)
