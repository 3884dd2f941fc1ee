"""What every benchmark shares: paired, interleaved repeats summarised as a ratio (median and
spread), JSON results, the machine's description, and a real service (API and workers as
separate processes on a database of their own).

A benchmark never asserts a timing: it reports. `--smoke` runs the same code on tiny sizes with
2 repeats so that `make test` keeps every script working.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("LRSEARCH_BENCH_RESULTS", ROOT / "bench" / "results"))
LRSEARCH = str(Path(sys.executable).with_name("lrsearch"))
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONUNBUFFERED": "1"}


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split()[1]
        info["memory_gib"] = round(int(mem) / 2**20, 1)
    except OSError:
        pass
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        info["gpus"] = [g for g in gpu.stdout.splitlines() if g.strip()]
    except (OSError, subprocess.SubprocessError):
        info["gpus"] = []
    import importlib.metadata as md

    # The GPU tier's machine has JAX or PyTorch and no TensorFlow: what is not installed is
    # left out.
    info["versions"] = {}
    for p in ("tensorflow", "jax", "torch", "keras", "optuna", "fastapi", "sqlalchemy"):
        with contextlib.suppress(md.PackageNotFoundError):
            info["versions"][p] = md.version(p)
    info["keras_backend"] = os.environ.get("KERAS_BACKEND") or "tensorflow"
    return info


@dataclass
class Ratio:
    """A figure: per-repeat ratios of paired measurements, summarised by the median and the
    spread (min, max, and the interquartile range when there are 4 or more repeats)."""

    name: str
    numerator: str
    denominator: str
    pairs: list[tuple[float, float]] = field(default_factory=list)
    target: str | None = None

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in self.pairs]

    def summary(self) -> dict[str, Any]:
        r = sorted(self.ratios)
        out: dict[str, Any] = {
            "name": self.name, "ratio": f"{self.numerator} / {self.denominator}",
            "repeats": len(r), "median": statistics.median(r), "min": r[0], "max": r[-1],
            "numerator_median": statistics.median(a for a, _ in self.pairs),
            "denominator_median": statistics.median(b for _, b in self.pairs),
            "pairs": self.pairs, "target": self.target}
        if len(r) >= 4:
            q = statistics.quantiles(r, n=4)
            out["iqr"] = [q[0], q[2]]
        return out

    def line(self) -> str:
        s = self.summary()
        spread = f"IQR {s['iqr'][0]:.3f}-{s['iqr'][1]:.3f}, " if "iqr" in s else ""
        target = f"  (target {self.target})" if self.target else ""
        return (f"{self.name}: {s['median']:.3f} median over {s['repeats']} paired repeats "
                f"({spread}range {s['min']:.3f}-{s['max']:.3f}){target}")


def interleave(repeats: int, *measure: Callable[[], float]) -> list[tuple[float, ...]]:
    """Run the measurements in turn, `repeats` times, alternating which goes first, so slow
    drifts of the machine fall on both sides of each pair."""
    rows = []
    for i in range(repeats):
        order = list(range(len(measure)))
        if i % 2:
            order.reverse()
        values: dict[int, float] = {}
        for j in order:
            values[j] = measure[j]()
        rows.append(tuple(values[j] for j in range(len(measure))))
    return rows


def write_result(name: str, payload: dict[str, Any], smoke: bool) -> Path:
    folder = RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    payload = {"benchmark": name, "smoke": smoke, "command": " ".join(sys.argv),
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """An API process and worker processes on their own SQLite database (or PostgreSQL when
    `database_url` is given), started and stopped by `service()`."""

    url: str
    env: dict[str, str]
    folder: Path
    api: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)

    def start_worker(self, *args: str, cpu: int | None = None, **env: str
                     ) -> subprocess.Popen[bytes]:
        """One `lrsearch worker ARGS`; `cpu` pins it (and its child) to one core with taskset
        and one TensorFlow thread pool thread each."""
        cmd = [LRSEARCH, "worker", *args]
        extra = dict(env)
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
            extra.update(TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
                         OMP_NUM_THREADS="1")
        log = open(self.folder / f"worker{len(self.workers)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, env={**self.env, **extra}, stdout=log, stderr=log,
                                start_new_session=True)
        self.workers.append(proc)
        return proc

    def stop_workers(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.workers.clear()

    def submit(self, body: dict[str, Any]) -> str:
        with self.http() as h:
            r = h.post("/v1/studies", json=body)
            r.raise_for_status()
            return str(r.json()["id"])

    def wait(self, study_id: str, timeout: float = 3600, poll: float = 0.2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.http() as h:
            while time.monotonic() < deadline:
                study: dict[str, Any] = h.get(f"/v1/studies/{study_id}").json()
                if study["status"] in ("succeeded", "failed", "cancelled"):
                    return study
                time.sleep(poll)
        raise TimeoutError(f"study {study_id} did not finish in {timeout}s")

    def trials(self, study_id: str) -> list[dict[str, Any]]:
        with self.http() as h:
            items: list[dict[str, Any]] = h.get(f"/v1/studies/{study_id}/trials",
                                                params={"limit": 500}).json()["items"]
            return items


@contextmanager
def service(database_url: str | None = None, **settings: str) -> Iterator[Service]:
    folder = Path(tempfile.mkdtemp(prefix="lrsearch-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.update(QUIET, CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
               LRSEARCH_DATABASE_URL=database_url or f"sqlite:///{folder}/lrsearch.db",
               LRSEARCH_DATA_DIR=str(folder / "data"), LRSEARCH_POLL_SECONDS="0.1",
               LRSEARCH_MAX_ACTIVE_STUDIES="1000",
               **{f"LRSEARCH_{k.upper()}": v for k, v in settings.items()})
    subprocess.run([LRSEARCH, "migrate"], env=env, check=True, capture_output=True)
    port = free_port()
    log = open(folder / "api.log", "wb")  # noqa: SIM115
    api = subprocess.Popen([LRSEARCH, "api", "--port", str(port), "--log-level", "warning"],
                           env=env, stdout=log, stderr=log, start_new_session=True)
    svc = Service(f"http://127.0.0.1:{port}", env, folder, api)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{svc.url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise RuntimeError((folder / "api.log").read_text())
            time.sleep(0.2)
        yield svc
    finally:
        svc.stop_workers()
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(timeout=30)
        except subprocess.TimeoutExpired:
            api.kill()


def command_line(main: Callable[..., Any], doc: str | None, *, repeats: int | None = 7,
                 **extra: tuple[type, Any, str]) -> None:
    """`python -m bench.bN ... [--smoke] [--repeats N] [--EXTRA ...]`: parse and call `main`."""
    import argparse

    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 2 repeats")
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats)
    for name, (kind, default, text) in extra.items():
        parser.add_argument(f"--{name}", type=kind, default=default, help=text)
    main(**vars(parser.parse_args()))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
