"""The lease heartbeat: its own thread and its own database connection."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.jobs import ops as jobs
from service.jobs.ops import Claim

log = logging.getLogger("lrsearch.worker.lease")


class Heartbeat:
    """Extends the claim's lease every `interval` seconds until stopped. `lost` is set when the
    lease turns out not to be ours any more; a database error is retried at the next beat
    (the lease is several beats long)."""

    def __init__(self, engine: Engine, claim: Claim, lease_seconds: float, interval: float
                 ) -> None:
        self.engine, self.claim = engine, claim
        self.lease_seconds, self.interval = lease_seconds, interval
        self.lost = threading.Event()
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
                    ok = jobs.heartbeat(s, self.claim, self.lease_seconds)
            except Exception as e:  # a dropped connection: try again at the next beat
                log.warning("heartbeat for job %s failed: %s", self.claim.job_id, e)
                continue
            if not ok:
                log.warning("job %s attempt %s: lease lost", self.claim.job_id,
                            self.claim.attempt)
                self.lost.set()
                return
