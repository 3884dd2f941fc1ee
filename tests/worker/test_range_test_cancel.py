"""A range test cancelled while a worker runs it: the worker stops its child at the next
heartbeat, records the cancellation (no late result overwrites it), and goes on to the next
job."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.jobs.models import Job
from service.range_tests.models import RangeTest
from tests.worker.conftest import Workers, finished, study_row, submit, wait_for

pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)

# Long enough to be cancelled mid-sweep: 5 sweeps of 1000 steps that never diverge.
LONG_RANGE_TEST = {"dataset": "digits", "min_lr": 1e-6, "max_lr": 1e-3, "num_iter": 1000,
                   "repeats": 5, "validation": True, "batch_size": 16}


def job_of(engine: Engine, test_id: str) -> Job:
    with Session(engine) as s:
        job = s.scalar(select(Job).where(Job.range_test_id == test_id))
        assert job is not None
        return job


def test_cancelling_a_running_range_test_stops_its_child(client: TestClient, engine: Engine,
                                                        workers: Workers) -> None:
    r = client.post("/v1/range-tests", json=LONG_RANGE_TEST)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    worker = workers.start()
    wait_for(lambda: client.get(f"/v1/range-tests/{tid}").json()["status"] == "running", 120,
             "the range test to run")
    assert client.post(f"/v1/range-tests/{tid}/cancel").status_code == 200
    wait_for(lambda: job_of(engine, tid).state == "cancelled", 30,
             "the worker to stop the range test")
    with Session(engine) as s:
        test = s.get(RangeTest, tid)
        assert test is not None
        assert test.status == "cancelled" and test.result is None
    # The worker lives on and takes the next job.
    sid = submit(client, n_trials=1, epochs=1)
    wait_for(lambda: finished(engine, sid), 120, "the next study to finish")
    assert study_row(engine, sid).status == "succeeded"
    assert worker.poll() is None
    assert "given up: stopping its child" in workers.log(0)
