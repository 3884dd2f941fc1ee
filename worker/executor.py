"""A spawned child process that runs jobs, reused for up to `max_jobs` jobs.

TensorFlow is never initialised in the worker process itself; a segfault, an OOM kill or a
memory leak dies with the child, and the next job gets a fresh one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from typing import Any

from worker import child


class ChildDied(Exception):
    """The child process exited without answering."""


class Executor:
    def __init__(self, gpu: int | None, max_jobs: int) -> None:
        self.gpu, self.max_jobs = gpu, max_jobs
        self._proc: Any = None
        self._conn: Any = None
        self._jobs = 0

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.is_alive() and self._jobs < self.max_jobs:
            return
        self.stop()
        ctx = multiprocessing.get_context("spawn")
        parent, child_end = ctx.Pipe()
        self._proc = ctx.Process(target=child.main, args=(child_end, self.gpu), daemon=True,
                                 name="lrsearch-child")
        self._proc.start()
        child_end.close()
        self._conn, self._jobs = parent, 0

    def submit(self, task: dict[str, Any]) -> None:
        self._ensure()
        self._jobs += 1
        self._conn.send(task)

    def reply(self, message: str) -> None:
        self._conn.send(message)

    def receive(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The child's next message, None on timeout; ChildDied if it exited."""
        try:
            if self._conn.poll(timeout):
                message: tuple[str, dict[str, Any]] = self._conn.recv()
                return message
        except (EOFError, OSError):
            pass
        else:
            if self._proc.is_alive():
                return None
        self._proc.join(timeout=5)
        code = self._proc.exitcode
        self._proc = None
        raise ChildDied(f"child process died (exit code {code})")

    def kill(self) -> None:
        """Stop the child now (a lost lease, a timeout, a forced shutdown)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=10)
        self._proc = None

    def stop(self) -> None:
        """Let an idle child exit cleanly."""
        if self._proc is not None and self._proc.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._proc.join(timeout=10)
        self.kill()
