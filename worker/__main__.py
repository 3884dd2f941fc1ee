"""`python -m worker ARGS` is `lrsearch worker ARGS`."""

from worker.cli import cmd_worker

cmd_worker.main(prog_name="python -m worker")
