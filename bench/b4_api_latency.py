"""B4, the API under load: `GET /v1/studies/{id}` with an API key (the key cache on, its
default 5 s), measured three ways.

(a) Saturation throughput, ours / bare: requests per second with 32 closed-loop clients (each
    sends its next request when the previous answer arrives, so the server never idles) against
    one `lrsearch api` process and against bench/bare_api.py (one route: the same primary-key
    read, engine and driver, a bearer token compared with a constant, the same JSON body), one
    process each on the same database, repeats interleaved. On SQLite, and on PostgreSQL when
    LRSEARCH_BENCH_POSTGRES_URL names a server (a database is created there and dropped).
    Target: >= 0.8.
(b) Open-loop latency, busy / idle: 64 clients each polling once a second, arrivals on a fixed
    schedule whatever the answers (a client whose answer is late does not send less), latency
    measured from the scheduled time; p50 and p99 with the workers paused ("idle") and while a
    worker trains ("busy"), phases interleaved by stopping and continuing the worker's process
    group (SIGSTOP / SIGCONT). Target: p99 <= 20 ms idle. On SQLite, and on PostgreSQL as (a).
(c) Processes: saturation requests per second of `lrsearch api --processes 2` / 1 (and 4 / 1
    on machines with 8 or more cores), same load.

The load generator (keep-alive connections on asyncio streams, a minimal HTTP client so that it
costs little CPU) runs on the same machine, one process: on 2 cores it takes about one of them,
which caps (a) and (c) alike.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.common import (
    LRSEARCH,
    Ratio,
    Service,
    command_line,
    free_port,
    percentile,
    service,
    write_result,
)

CLIENTS = 64  # (b): clients polling once a second
SATURATION_CLIENTS = 32  # (a), (c): closed-loop clients
POSTGRES_ENV = "LRSEARCH_BENCH_POSTGRES_URL"


def _request(url: str, path: str, headers: dict[str, str] | None) -> tuple[str, int, bytes]:
    parsed = urlsplit(url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = (f"GET {path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
               f"Accept: application/json\r\n{extra}\r\n").encode()
    return parsed.hostname or "127.0.0.1", parsed.port or 80, request


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> None:
    """One request and its whole answer on a keep-alive connection; non-200 raises. A minimal
    client on purpose: httpx costs about a millisecond of CPU per request, and on a 2-core
    machine the load generator's own CPU would then be most of what is measured."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {head!r}")


async def _client(host: str, port: int, request: bytes, n: int, out: list[float]) -> None:
    """One keep-alive connection sending `n` requests one after another."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(n):
            start = time.perf_counter()
            await _exchange(reader, writer, request)
            out.append(time.perf_counter() - start)
    finally:
        writer.close()


async def _closed_loop(url: str, path: str, clients: int, per_client: int,
                       headers: dict[str, str] | None) -> tuple[list[float], float]:
    host, port, request = _request(url, path, headers)
    latencies: list[float] = []
    start = time.perf_counter()
    await asyncio.gather(*(_client(host, port, request, per_client, latencies)
                           for _ in range(clients)))
    return latencies, time.perf_counter() - start


def measure(url: str, path: str, clients: int, per_client: int,
            headers: dict[str, str] | None = None) -> list[float]:
    """Closed loop: the latencies of `clients` x `per_client` requests."""
    return asyncio.run(_closed_loop(url, path, clients, per_client, headers))[0]


def throughput(url: str, path: str, clients: int, per_client: int,
               headers: dict[str, str] | None = None) -> float:
    """Closed loop: requests per second, all clients together."""
    latencies, seconds = asyncio.run(_closed_loop(url, path, clients, per_client, headers))
    return len(latencies) / seconds


async def _open_loop(url: str, path: str, clients: int, seconds: float,
                     headers: dict[str, str] | None) -> list[float]:
    """Each client sends a request every second, client i offset by i/clients s, for `seconds`;
    a request goes out at its time on an idle connection (or a new one) whether or not earlier
    answers came back. Latency runs from the scheduled time, so a late send counts too."""
    host, port, request = _request(url, path, headers)
    loop = asyncio.get_running_loop()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened: list[asyncio.StreamWriter] = []
    latencies: list[float] = []
    begin = loop.time() + 0.2

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(host, port)
        opened.append(writer)
        return reader, writer

    async def one(due: float) -> None:
        await asyncio.sleep(max(0.0, due - loop.time()))
        reader, writer = idle.pop() if idle else await connect()
        try:
            await _exchange(reader, writer, request)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closed a connection idle past its keep-alive timeout as we reused
            # it: the request goes again on a new one (its latency still counts from `due`).
            writer.close()
            reader, writer = await connect()
            await _exchange(reader, writer, request)
        latencies.append(loop.time() - due)
        idle.append((reader, writer))

    try:
        await asyncio.gather(*(one(begin + c / clients + k)
                               for c in range(clients) for k in range(int(seconds))))
    finally:
        for writer in opened:
            writer.close()
    return latencies


def open_loop(url: str, path: str, clients: int, seconds: float,
              headers: dict[str, str] | None = None) -> list[float]:
    return asyncio.run(_open_loop(url, path, clients, seconds, headers))


def _wait_ready(url: str, proc: subprocess.Popen[bytes], what: str, probe: str = "/readyz",
                headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + probe, headers=headers, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.2)


@contextmanager
def _process(cmd: list[str], env: dict[str, str], url: str, what: str, probe: str = "/readyz",
             headers: dict[str, str] | None = None) -> Iterator[str]:
    """A server process, stopped (SIGTERM, then SIGKILL) on the way out."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_ready(url, proc, what, probe, headers)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def api(svc: Service, processes: int) -> AbstractContextManager[str]:
    """Another `lrsearch api` on the service's database, with --processes."""
    port = free_port()
    return _process([LRSEARCH, "api", "--port", str(port), "--log-level", "warning",
                     "--processes", str(processes)], svc.env, f"http://127.0.0.1:{port}",
                    f"lrsearch api --processes {processes}")


def bare(svc: Service, key: str, path: str) -> AbstractContextManager[str]:
    port = free_port()
    return _process([sys.executable, "-m", "bench.bare_api", "--port", str(port),
                     "--database-url", svc.env["LRSEARCH_DATABASE_URL"], "--token", key],
                    svc.env, f"http://127.0.0.1:{port}", "bench.bare_api", path,
                    {"Authorization": f"Bearer {key}"})


def study_and_key(svc: Service, **body: Any) -> tuple[str, str]:
    """A study (submitted while no key exists: the local tenant), then a key of that tenant
    (which ends anonymous access)."""
    study_id = svc.submit({"family": "constant", "dataset": "digits", "pruner": {"name": "none"},
                           **body})
    created = subprocess.run([LRSEARCH, "keys", "create", "--tenant", "local", "--name",
                              "bench"], env=svc.env, capture_output=True, text=True, check=True)
    return study_id, created.stdout.split()[0]


@contextmanager
def postgres_database(server: str) -> Iterator[str]:
    """A new database on `server` (a SQLAlchemy URL), dropped on the way out."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"lrsearch_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def saturation(backend: str, database_url: str | None, repeats: int, clients: int,
               per_client: int, processes: list[int]) -> list[dict[str, Any]]:
    """(a) ours / bare on one database and, with `processes`, (c) N processes / 1."""
    ours_vs_bare = Ratio(f"B4a API saturation throughput, ours / bare FastAPI ({backend})",
                         "requests/s of lrsearch api", "requests/s of bench/bare_api.py",
                         target=">= 0.8")
    by_processes = {n: Ratio(f"B4c API throughput, {n} processes / 1 ({backend})",
                             f"requests/s of lrsearch api --processes {n}",
                             "requests/s of one process") for n in processes if n > 1}
    with service(database_url) as svc:
        study_id, key = study_and_key(svc, epochs=1, n_trials=1)
        path, auth = f"/v1/studies/{study_id}", {"Authorization": f"Bearer {key}"}
        with bare(svc, key, path) as bare_url:
            ours_body = httpx.get(svc.url + path, headers=auth).json()
            assert httpx.get(bare_url + path, headers=auth).json() == ours_body, \
                "the bare app's answer differs from ours"
            for url in (svc.url, bare_url):  # warm both: pools, code paths, key cache
                throughput(url, path, clients, 3, auth)
            ours_vs_bare.pairs.extend(_interleaved(
                repeats, rate_of(svc.url, path, clients, per_client, auth),
                rate_of(bare_url, path, clients, per_client, auth)))
        for n, ratio in by_processes.items():
            with api(svc, n) as many, api(svc, 1) as one:
                for url in (many, one):
                    throughput(url, path, clients, 3, auth)
                ratio.pairs.extend(_interleaved(
                    repeats, rate_of(many, path, clients, per_client, auth),
                    rate_of(one, path, clients, per_client, auth)))
    figures = [ours_vs_bare, *by_processes.values()]
    for f in figures:
        print(f.line())
        print(f"  {f.numerator}: {f.summary()['numerator_median']:.0f}, {f.denominator}: "
              f"{f.summary()['denominator_median']:.0f} (medians)")
    return [f.summary() | {"clients": clients, "requests_per_client": per_client}
            for f in figures]


def rate_of(url: str, path: str, clients: int, per_client: int,
            headers: dict[str, str]) -> Callable[[], float]:
    return lambda: throughput(url, path, clients, per_client, headers)


def _interleaved(repeats: int, a: Callable[[], float], b: Callable[[], float]
                 ) -> Iterator[tuple[float, float]]:
    for i in range(repeats):
        if i % 2 == 0:
            first = a()
            yield first, b()
        else:
            second = b()
            yield a(), second


def latency(backend: str, database_url: str | None, repeats: int, clients: int,
            seconds: float) -> dict[str, Any]:
    """(b) the open loop, idle and busy, on one database."""
    p99 = Ratio(f"B4b API p99 latency, open loop, busy / idle ({backend})",
                "p99 while a worker trains", "p99 with the worker paused")
    phases: list[dict[str, Any]] = []
    with service(database_url, lease_seconds="600") as svc:
        study_id, key = study_and_key(svc, epochs=1000, batch_size=16, n_trials=1000)
        path, auth = f"/v1/studies/{study_id}", {"Authorization": f"Bearer {key}"}
        worker = svc.start_worker()
        deadline = time.monotonic() + 120
        with svc.http() as h:  # busy means a trial is really training
            while h.get(path, headers=auth).json()["counts"]["running"] == 0:
                assert time.monotonic() < deadline, "the worker never started a trial"
                time.sleep(0.5)
        time.sleep(3)
        measure(svc.url, path, clients, 3, auth)  # warm the API's pool, code and key cache

        def phase(busy: bool) -> float:
            os.killpg(worker.pid, signal.SIGCONT if busy else signal.SIGSTOP)
            time.sleep(1.0)
            lat = open_loop(svc.url, path, clients, seconds, auth)
            phases.append({"busy": busy, "requests": len(lat),
                           "p50_ms": 1000 * statistics.median(lat),
                           "p99_ms": 1000 * percentile(lat, 99),
                           "max_ms": 1000 * max(lat)})
            return float(phases[-1]["p99_ms"])

        for i in range(repeats):
            order = [True, False] if i % 2 == 0 else [False, True]
            got = {busy: phase(busy) for busy in order}
            p99.pairs.append((got[True], got[False]))
        os.killpg(worker.pid, signal.SIGCONT)
        with svc.http() as h:
            h.post(f"{path}/cancel", headers=auth)
    idle = [p for p in phases if not p["busy"]]
    busy = [p for p in phases if p["busy"]]
    summary = {
        **p99.summary(),
        "idle_p50_ms": statistics.median(p["p50_ms"] for p in idle),
        "idle_p99_ms": statistics.median(p["p99_ms"] for p in idle),
        "busy_p50_ms": statistics.median(p["p50_ms"] for p in busy),
        "busy_p99_ms": statistics.median(p["p99_ms"] for p in busy),
        "idle_p99_target": "<= 20 ms", "database": backend, "clients": clients,
        "seconds_per_phase": seconds,
        "phases": phases}
    print(p99.line())
    print(f"  idle p50 {summary['idle_p50_ms']:.1f} ms, p99 {summary['idle_p99_ms']:.1f} ms "
          f"(target p99 <= 20 ms, {backend}); busy p50 {summary['busy_p50_ms']:.1f} ms, p99 "
          f"{summary['busy_p99_ms']:.1f} ms; {clients} clients polling once a second")
    return summary


def main(smoke: bool = False, repeats: int = 5) -> dict[str, Any]:
    repeats = 2 if smoke else repeats
    clients, per_client = (8, 5) if smoke else (SATURATION_CLIENTS, 100)
    processes = [1, 2] + ([4] if (os.cpu_count() or 1) >= 8 and not smoke else [])
    pollers, seconds = (8, 2) if smoke else (CLIENTS, 30)
    figures = saturation("SQLite", None, repeats, clients, per_client, processes)
    open_loop_figure = latency("SQLite", None, repeats, pollers, seconds)
    figures.append(open_loop_figure)
    server = os.environ.get(POSTGRES_ENV)
    if server and not smoke:
        with postgres_database(server) as url:
            figures += saturation("PostgreSQL", url, repeats, clients, per_client, processes)
        with postgres_database(server) as url:
            figures.append(latency("PostgreSQL", url, repeats, pollers, seconds))
    elif not smoke:
        print(f"  B4 on PostgreSQL skipped: set {POSTGRES_ENV} to a server URL", flush=True)
    figures.sort(key=lambda f: str(f["name"])[:3])  # B4a, B4b, B4c (stable within each)
    write_result("b4_api_latency", {"figures": figures}, smoke)
    return open_loop_figure


if __name__ == "__main__":
    command_line(main, __doc__, repeats=5)
