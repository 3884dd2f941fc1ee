"""`lrsearch api --processes N`: N server processes share the port and all answer; SIGTERM stops
them all; N is checked. Which process answered a connection is read from /proc (the process
holding the connection's socket), so the API itself says nothing about its processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from service.config import Settings
from tests.processes import LRSEARCH, free_port, wait_ready

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads sockets' owners from /proc")


def children(pid: int) -> list[int]:
    """The server processes uvicorn started (multiprocessing's spawned children, not its
    resource tracker)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(entry))
    return sorted(out)


def established_inodes(port: int) -> set[int]:
    """The socket inodes of the server's side of every established connection to `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(int(fields[9]))
    return inodes


def socket_owner(inodes: set[int], pids: list[int]) -> dict[int, int]:
    """inode -> the pid (of `pids`) holding that socket."""
    owner = {}
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inode = int(link[8:-1])
                if inode in inodes:
                    owner[inode] = pid
    return owner


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_processes_answer_and_stop_together(settings: Settings, engine: Engine,
                                                tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.update(LRSEARCH_DATABASE_URL=settings.database_url,
               LRSEARCH_DATA_DIR=str(settings.data_dir))
    port, log = free_port(), tmp_path / "api.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([LRSEARCH, "api", "--port", str(port), "--processes", "2"],
                                env=env, stdout=out, stderr=out)
    clients: list[httpx.Client] = []
    try:
        wait_ready(url, proc, log)
        servers = children(proc.pid)
        assert len(servers) == 2, servers
        # 32 keep-alive connections opened at once, 5 requests each; each stays open, so the
        # process holding its socket is the one that answered it.
        clients = [httpx.Client(base_url=url, timeout=30) for _ in range(32)]
        barrier = threading.Barrier(len(clients))
        codes: list[int] = []

        def load(client: httpx.Client) -> None:
            barrier.wait()
            for _ in range(5):
                codes.append(client.get("/v1/studies").status_code)

        threads = [threading.Thread(target=load, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert codes == [200] * 160
        owners = socket_owner(established_inodes(port), servers)
        assert len(owners) == len(clients), owners
        answered = {pid: list(owners.values()).count(pid) for pid in servers}
        assert all(answered.values()), f"connections per process: {answered}"
        for c in clients:
            c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        assert not [pid for pid in servers if alive(pid)]
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text[-4000:]
        assert text.count("Application shutdown complete") == 2, text[-4000:]
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_processes_out_of_range_is_refused() -> None:
    for bad in ("0", "65"):
        done = subprocess.run([LRSEARCH, "api", "--processes", bad], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2
        assert "--processes" in done.stderr and bad in done.stderr
