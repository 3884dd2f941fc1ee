"""Several workers on one GPU (`--per-gpu N`) and the workers' Keras backend (`--backend`).

GPUs are faked only where they are enumerated: a fake `nvidia-smi` first on PATH lists two.
Everything else is real: `lrsearch serve --per-gpu 2` starts four worker processes, two pinned
to each device; each worker's child (where Keras runs) reports the backend and the GPU settings
it runs with, and the workers publish them in their presence rows. On this machine there is no
GPU behind CUDA_VISIBLE_DEVICES, so the workers simply train on the CPU."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import click
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from service.cli import visible_gpus, worker_commands
from service.workers.models import WorkerRow
from tests.processes import LRSEARCH, free_port, wait_ready

FAKE_SMI = """#!/bin/sh
[ "$1" = "-L" ] || exit 9
echo "GPU 0: NVIDIA Fake (UUID: GPU-00000000-0000-0000-0000-000000000000)"
echo "GPU 1: NVIDIA Fake (UUID: GPU-11111111-1111-1111-1111-111111111111)"
"""


def fake_smi(folder: Path, text: str = FAKE_SMI) -> Path:
    """A folder to put first on PATH whose `nvidia-smi` prints `text`."""
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(text)
    smi.chmod(0o755)
    return folder


def group_alive(pgid: int) -> bool:
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    return bool(found.stdout.strip())


def rows(db: Path) -> list[WorkerRow]:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with Session(engine, expire_on_commit=False) as s:
            return list(s.scalars(select(WorkerRow)).all())
    finally:
        engine.dispose()


def test_serve_per_gpu_starts_n_workers_on_each_gpu_sharing_it(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LRSEARCH_") and k not in ("CUDA_VISIBLE_DEVICES", "KERAS_BACKEND")}
    env.update(PATH=f"{fake_smi(tmp_path / 'bin')}:{env['PATH']}", TF_CPP_MIN_LOG_LEVEL="3",
               LRSEARCH_POLL_SECONDS="0.2", LRSEARCH_HEARTBEAT_SECONDS="1",
               JAX_PLATFORMS="cpu")  # no CUDA plugin probing: there is no GPU behind the ids
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        # JAX: the quickest backend to import, four times on a small machine.
        serve = subprocess.Popen([LRSEARCH, "serve", "--port", str(port), "--per-gpu", "2",
                                  "--backend", "jax"], cwd=tmp_path, env=env, stdout=out,
                                 stderr=out, start_new_session=True)
    db = tmp_path / ".lrsearch" / "lrsearch.db"
    try:
        wait_ready(f"http://127.0.0.1:{port}", serve, log, timeout=90)
        deadline = time.monotonic() + 240  # four children import Keras and JAX
        found: list[WorkerRow] = []
        while time.monotonic() < deadline:
            found = [r for r in rows(db) if r.capabilities is not None]
            if len(found) == 4:
                break
            assert serve.poll() is None, log.read_text(errors="replace")[-6000:]
            time.sleep(0.5)
        assert len(found) == 4, f"{len(found)} workers registered:\n" \
                                f"{log.read_text(errors='replace')[-6000:]}"
        assert sorted(r.gpu or 0 for r in found) == [0, 0, 1, 1]
        assert all(r.gpu is not None for r in found)
        for r in found:
            caps: dict[str, Any] = r.capabilities or {}
            assert caps["backend"] == "jax"  # the child's Keras really runs on JAX
            variables = caps["device"]["variables"]
            assert variables["KERAS_BACKEND"] == "jax"
            assert variables["CUDA_VISIBLE_DEVICES"] == str(r.gpu)
            # Each of the two takes at most its share and allocates on demand.
            assert variables["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
            assert variables["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.475"
            assert r.stopped_at is None
            # The worker process serve started was told the same, on its command line.
            args = Path(f"/proc/{r.pid}/cmdline").read_bytes().split(b"\0")
            i = args.index(b"--gpu")
            assert args[i + 1] == str(r.gpu).encode()
            assert args[args.index(b"--per-gpu") + 1] == b"2"
        assert len({r.pid for r in found}) == 4

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=90) == 0, log.read_text(errors="replace")[-6000:]
        deadline = time.monotonic() + 15  # workers and their children wind down
        while group_alive(serve.pid) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not group_alive(serve.pid), "processes outlived serve"
        assert all(r.stopped_at is not None for r in rows(db)), "a worker did not stop cleanly"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)


def test_visible_gpus_reads_nvidia_smi_or_cuda_visible_devices(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{fake_smi(tmp_path / 'bin')}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == [0, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the ids a worker's --gpu passes on
    assert visible_gpus() == [2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,0")  # CUDA ignores what follows -1
    assert visible_gpus() == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", str(fake_smi(tmp_path / "none", "#!/bin/sh\nexit 0\n")))
    assert visible_gpus() == []


def test_worker_commands_spread_workers_and_refuse_bad_options() -> None:
    assert worker_commands([0, 1], None, 2, "torch") == [
        ["worker", "--gpu", str(g), "--per-gpu", "2", "--backend", "torch"]
        for g in (0, 0, 1, 1)]
    assert worker_commands([4, 5], 3, None, None) == [
        ["worker", "--gpu", "4"], ["worker", "--gpu", "5"], ["worker", "--gpu", "4"]]
    assert worker_commands([], None, None, None) == [["worker"]]
    for args, message in [(([], None, 2, None), "--per-gpu 2: this machine shows no GPU"),
                          (([0], 2, 2, None), "--per-gpu 2 and --workers 2"),
                          (([0], None, 0, None), "--per-gpu must be at least 1, not 0"),
                          (([0], None, None, "mxnet"), "--backend 'mxnet'")]:
        with pytest.raises(click.UsageError, match=message):
            worker_commands(*args)


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--backend", "theano"], {}, "--backend 'theano' is not a Keras backend"),
    ([], {"KERAS_BACKEND": "cntk"}, "KERAS_BACKEND 'cntk' is not a Keras backend"),
    (["--per-gpu", "0"], {}, "--per-gpu"),
])
def test_worker_refuses_an_unknown_backend_or_share(args: list[str], env: dict[str, str],
                                                    message: str) -> None:
    out = subprocess.run([LRSEARCH, "worker", *args], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr, out.stderr
