"""The lease heartbeat and the worker's presence: their own threads and their own database
connections."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.jobs import ops as jobs
from service.jobs.ops import Claim
from service.workers import ops as workers

log = logging.getLogger("lrsearch.worker.lease")


class Heartbeat:
    """Extends the claim's lease every `interval` seconds until stopped. `lost` is set when the
    lease turns out not to be ours any more, `cancel_requested` when the job's owner asked to
    cancel it; a database error is retried at the next beat (the lease is several beats
    long)."""

    def __init__(self, engine: Engine, claim: Claim, lease_seconds: float, interval: float
                 ) -> None:
        self.engine, self.claim = engine, claim
        self.lease_seconds, self.interval = lease_seconds, interval
        self.lost = threading.Event()
        self.cancel_requested = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lrsearch-heartbeat",
                                        daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with Session(self.engine) as s, s.begin():
                    cancel = jobs.heartbeat(s, self.claim, self.lease_seconds)
            except Exception as e:  # a dropped connection: try again at the next beat
                log.warning("heartbeat for job %s failed: %s", self.claim.job_id, e)
                continue
            if cancel:
                self.cancel_requested.set()
            if cancel is None:
                log.warning("job %s attempt %s: lease lost", self.claim.job_id,
                            self.claim.attempt)
                self.lost.set()
                return


class Presence:
    """Keeps this worker's row in `workers` fresh every `interval` seconds for the worker's
    whole life (idle or busy), and marks it stopped at exit: `workers alive` on /metrics and
    the web page count these rows. A failed write is retried at the next beat."""

    def __init__(self, engine: Engine, name: str, gpu: int | None, interval: float,
                 capabilities: dict[str, Any] | None = None) -> None:
        self.engine, self.name, self.gpu, self.interval = engine, name, gpu, interval
        self.capabilities = capabilities  # what its plugins let it load, published with it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lrsearch-presence",
                                        daemon=True)

    def __enter__(self) -> Presence:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        try:
            with Session(self.engine) as s, s.begin():
                workers.stopped(s, self.name)
        except Exception as e:  # the row simply ages out
            log.warning("could not mark worker %s stopped: %s", self.name, e)

    def _beat(self) -> None:
        try:
            with Session(self.engine) as s, s.begin():
                workers.seen(s, self.name, socket.gethostname(), os.getpid(), self.gpu,
                             self.capabilities)
        except Exception as e:
            log.warning("presence of worker %s not recorded: %s", self.name, e)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()
