"""What a task (worker/tasks/) may use of the worker that runs it: a narrow view of `Worker`,
so that tasks never import the loop (which imports them through the job-kind registry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from service.jobs.ops import Claim
from worker.lease import Heartbeat

if TYPE_CHECKING:
    import optuna
    from sqlalchemy.orm import Session

    from service.config import Settings

T = TypeVar("T")


class TaskContext(Protocol):
    """The running worker, as a task sees it (worker.loop.Worker is one)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def name(self) -> str:
        """The worker's name, recorded on the rows it works on."""
        ...

    @property
    def optuna(self) -> optuna.storages.RDBStorage: ...

    @property
    def crash_slots(self) -> set[int]:
        """Fault injection: study slots whose child crashes (LRSEARCH_FAULT_CRASH_SLOTS)."""
        ...

    @property
    def exit_before_tell_slots(self) -> set[int]:
        """Fault injection: slots whose worker dies between our commit and Optuna's tell."""
        ...

    @property
    def stopping(self) -> bool:
        """The worker was asked to stop (a first SIGTERM or SIGINT): hand work on when it can."""
        ...

    def db(self, fn: Callable[[Session], T]) -> T:
        """Run fn in one transaction (committed when it returns), retrying while the database
        is unreachable."""
        ...

    def supervise(self, claim: Claim, beat: Heartbeat, task: dict[str, Any],
                  on_message: Callable[[str, dict[str, Any]], str | None],
                  stop_on_cancel: bool = False) -> tuple[str, dict[str, Any]]:
        """Run `task` in the child until it ends; see Worker.supervise."""
        ...


def run_once(w: TaskContext, c: Claim, beat: Heartbeat, task: dict[str, Any],
             on_cancelled: Callable[[Session], None] | None
             ) -> tuple[str, dict[str, Any]] | None:
    """Run a job without epochs (a range test, a registration) in the child, stopping when its
    cancellation is asked; returns the child's answer, or None once the job was dealt with:
    released at shutdown, cancelled (`on_cancelled`, in a transaction), or given back to the
    queue (or failed) after a retryable failure."""
    from service.jobs import ops as jobs
    from worker.errors import Cancelled, Released, Retryable

    try:
        return w.supervise(c, beat, task, lambda kind, payload: None, stop_on_cancel=True)
    except Released:
        w.db(lambda s: jobs.release(s, c))
    except Cancelled:
        if on_cancelled is not None:
            w.db(on_cancelled)
    except Retryable as e:
        reason = str(e)
        w.db(lambda s: jobs.retry_or_fail(s, jobs.fenced(s, c), reason,
                                          w.settings.max_attempts))
    return None


def data_options(settings: Settings, tenant: str) -> dict[str, Any]:
    """What a child needs to read the tenant's dataset references, as plain data for a task:
    its roots and how to stream (lrsearch.datasets.streams.StreamOptions)."""
    from lrsearch.datasets.references import tenant_roots

    cache_dir = str(settings.data_dir / "cache") if settings.data_cache == "disk" else None
    return {"roots": list(tenant_roots(settings.data_roots, tenant)),
            "stream": {"shuffle_buffer": settings.shuffle_buffer, "cache": settings.data_cache,
                       "cache_dir": cache_dir}}


Task = Callable[[TaskContext, Claim, Heartbeat], None]
"""A job kind's task: run the claimed job and record its outcome behind the lease's fence."""
