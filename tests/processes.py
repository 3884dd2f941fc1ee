"""Helpers for the tests that run `lrsearch` as real processes: the installed command, a free
port, and waiting until a started API answers /readyz."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

LRSEARCH = str(Path(sys.executable).with_name("lrsearch"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_ready(url: str) -> bool:
    """The API at `url` answers /readyz with 200 (database reachable, migrations at head)."""
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    """Until the API at `url` is ready; fails with the process's log if it exits or the
    timeout passes first."""
    deadline = time.monotonic() + timeout
    while not is_ready(url):
        assert proc.poll() is None, f"exited:\n{log.read_text(errors='replace')[-8000:]}"
        assert time.monotonic() < deadline, \
            f"not ready in {timeout}s:\n{log.read_text(errors='replace')[-8000:]}"
        time.sleep(0.3)
