"""Why a worker gives a job up. Each is raised out of `Worker.supervise` (which kills the child
first) and handled by the task, which records the outcome behind the lease's fence."""

from __future__ import annotations


class Released(Exception):
    """The worker is shutting down: the job goes back to the queue, no failure counted."""


class Retryable(Exception):
    """Lost child, crash or timeout: the job is retried up to max_attempts."""


class Cancelled(Exception):
    """The job's owner cancelled it while it ran (range tests; trials stop at an epoch)."""


class Unregistered(LookupError):
    """A name read from a row (a job kind, a sampler, a pruner) that this worker has no entry
    for: a row written by a newer service, or a bug. The job fails after its retries with this
    message, which lists the known names. `field` names where the name was read."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
