"""The job kinds a worker runs: each kind's task by the name job rows store (`jobs.kind`).

A task receives a TaskContext (worker/context.py), never the Worker: the loop imports this
registry, and nothing here imports the loop."""

from __future__ import annotations

from lrsearch.registry import Registry
from worker.context import Task
from worker.errors import Unregistered
from worker.tasks import dataset, range_test, trial

TASKS: Registry[Task] = Registry("job kind", error=Unregistered, field="kind")
TASKS.add("trial", trial.run)
TASKS.add("range_test", range_test.run)
TASKS.add("dataset", dataset.run)
