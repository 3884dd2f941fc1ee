"""A spawned child process that runs jobs, reused for up to `max_jobs` jobs.

Keras and its backend are never initialised in the worker process itself; a segfault, an OOM
kill or a memory leak dies with the child, and the next job gets a fresh one.

Every message on the pipe carries the tag of the job it is about, `(job id, attempt)`: the
parent sends `task` dicts with a "tag" and replies as `(tag, reply)`; the child answers
`(tag, kind, payload)`. A message whose tag is not the current task's is dropped, so nothing a
child says about one job can ever be recorded under another.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from typing import Any

from worker import child

log = logging.getLogger("lrsearch.worker.executor")
Tag = tuple[int, int]  # (job id, attempt): the job and the claim a message belongs to


class ChildDied(Exception):
    """The child process exited without answering."""


class Executor:
    def __init__(self, gpu: int | None, max_jobs: int, plugins: list[str] | None = None,
                 backend: str = "tensorflow", per_gpu: int = 1) -> None:
        """`backend` is the children's Keras backend; `per_gpu` how many workers share their
        GPU (each child takes its share: worker/child.py `_prepare_backend`)."""
        self.gpu, self.max_jobs = gpu, max_jobs
        self.backend, self.per_gpu = backend, per_gpu
        self.plugins = list(plugins or [])  # imported by the child before any task
        self._proc: Any = None
        self._conn: Any = None
        self._jobs = 0
        self._tag: Tag | None = None  # the task the child is working on, if any

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.is_alive() and self._jobs < self.max_jobs:
            return
        self.stop()
        ctx = multiprocessing.get_context("spawn")
        parent, child_end = ctx.Pipe()
        self._proc = ctx.Process(target=child.main,
                                 args=(child_end, self.gpu, os.getpid(), self.backend,
                                       self.per_gpu),
                                 daemon=True, name="lrsearch-child")
        self._proc.start()
        child_end.close()
        self._conn, self._jobs = parent, 0

    def submit(self, tag: Tag, task: dict[str, Any]) -> None:
        """Hand the child a task for the job and attempt `tag`."""
        self._ensure()
        self._jobs += 1
        self._tag = tag
        self._conn.send({**task, "tag": tag, "plugins": self.plugins})

    def reply(self, message: str) -> None:
        """Answer the current task's last message ("go", "prune" or "cancel")."""
        assert self._tag is not None, "no task is running"
        self._conn.send((self._tag, message))

    def receive(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The child's next message about the current task, None on timeout (messages about
        any other task are dropped); ChildDied if it exited."""
        try:
            if self._conn.poll(timeout):
                tag, kind, payload = self._conn.recv()
                if tuple(tag) != self._tag:
                    log.warning("dropped a %r message for job/attempt %s; the current task is "
                                "%s", kind, tuple(tag), self._tag)
                    return None
                if kind not in ("started", "epoch"):
                    self._tag = None  # the final message: the child is idle again
                return kind, payload
        except (EOFError, OSError):
            pass
        else:
            if self._proc.is_alive():
                return None
        self._proc.join(timeout=5)
        code = self._proc.exitcode
        self._proc, self._tag = None, None
        raise ChildDied(f"child process died (exit code {code})")

    @property
    def busy(self) -> bool:
        """A task was handed over and its final message has not arrived."""
        return self._tag is not None

    def kill(self) -> None:
        """Stop the child now (a lost lease, a timeout, a forced shutdown)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=10)
        self._proc, self._tag = None, None

    def stop(self) -> None:
        """Let an idle child exit cleanly (a busy one is killed)."""
        if self._proc is not None and self._proc.is_alive() and not self.busy:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._proc.join(timeout=10)
        self.kill()
