"""Range tests after submission: the active limit per tenant, cancel, delete, and a list that
leaves the sweeps out (only one range test's own page carries its curves)."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.config import Settings
from service.jobs.models import Job
from service.range_tests.models import RangeTest
from service.studies.models import Study

BODY = {"dataset": "digits", "min_lr": 1e-5, "max_lr": 1.0, "num_iter": 50}
BOUNDS = {"one_cycle": {"max_lr": {"low": 0.05, "high": 0.5, "log": True}}}
SUGGESTIONS = {"valley": {"median": 0.02, "spread": 0.1}, "steepest": {"median": 0.01,
                                                                         "spread": 0.2}}


def submit(client: TestClient) -> str:
    r = client.post("/v1/range-tests", json=BODY)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def job_of(engine: Engine, test_id: str) -> Job | None:
    with Session(engine) as s:
        return s.scalar(select(Job).where(Job.range_test_id == test_id))


def finish(engine: Engine, test_id: str, sweeps: list[dict[str, Any]] | None = None) -> None:
    """What a worker records when a range test succeeds."""
    with Session(engine) as s, s.begin():
        test = s.get(RangeTest, test_id)
        assert test is not None
        test.status = "succeeded"
        test.result = {"sweeps": sweeps or [], "suggestions": SUGGESTIONS,
                       "family_bounds": BOUNDS}
        job = s.scalar(select(Job).where(Job.range_test_id == test_id))
        assert job is not None
        job.state = "done"


def test_cancel_a_queued_range_test(client: TestClient, engine: Engine) -> None:
    tid = submit(client)
    r = client.post(f"/v1/range-tests/{tid}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["finished_at"] is not None
    job = job_of(engine, tid)
    assert job is not None and job.state == "cancelled"  # no worker will claim it
    assert client.get(f"/v1/range-tests/{tid}").json()["status"] == "cancelled"
    again = client.post(f"/v1/range-tests/{tid}/cancel")
    assert again.status_code == 409 and again.json()["field"] == "status"
    assert f"Range test `{tid}` is already cancelled." == again.json()["detail"]


def test_cancel_a_running_range_test_asks_its_worker_to_stop(client: TestClient,
                                                            engine: Engine) -> None:
    tid = submit(client)
    with Session(engine) as s, s.begin():  # as a worker's claim leaves it
        job = s.scalar(select(Job).where(Job.range_test_id == tid))
        test = s.get(RangeTest, tid)
        assert job is not None and test is not None
        job.state, job.attempt, job.lease_owner, test.status = "running", 1, "w1", "running"
    r = client.post(f"/v1/range-tests/{tid}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    job = job_of(engine, tid)
    assert job is not None and job.state == "running" and job.cancel_requested


def test_finished_range_tests_cannot_be_cancelled_and_only_they_can_be_deleted(
        client: TestClient, engine: Engine) -> None:
    tid = submit(client)
    early = client.delete(f"/v1/range-tests/{tid}")
    assert early.status_code == 409 and "is queued; cancel it before deleting" in \
        early.json()["detail"]
    assert client.get(f"/v1/range-tests/{tid}").status_code == 200
    finish(engine, tid)
    late = client.post(f"/v1/range-tests/{tid}/cancel")
    assert late.status_code == 409 and "already succeeded" in late.json()["detail"]
    assert client.delete(f"/v1/range-tests/{tid}").status_code == 204
    assert client.get(f"/v1/range-tests/{tid}").status_code == 404
    assert job_of(engine, tid) is None  # its job went with it
    assert client.get("/v1/range-tests").json()["total"] == 0
    for gone in (client.delete(f"/v1/range-tests/{tid}"),
                 client.post(f"/v1/range-tests/{tid}/cancel")):
        assert gone.status_code == 404 and f"Unknown range test `{tid}`" in gone.json()["detail"]


def test_a_cancelled_range_test_can_be_deleted(client: TestClient, engine: Engine) -> None:
    tid = submit(client)
    assert client.post(f"/v1/range-tests/{tid}/cancel").status_code == 200
    assert client.delete(f"/v1/range-tests/{tid}").status_code == 204
    assert job_of(engine, tid) is None


def test_a_study_keeps_its_bounds_when_its_range_test_is_deleted(client: TestClient,
                                                                 engine: Engine) -> None:
    tid = submit(client)
    finish(engine, tid)
    body = {"family": "one_cycle", "dataset": "digits", "epochs": 5, "n_trials": 2,
            "range_test_id": tid}
    study = client.post("/v1/studies", json=body)
    assert study.status_code == 201, study.text
    assert client.delete(f"/v1/range-tests/{tid}").status_code == 204
    sid = study.json()["id"]
    assert client.get(f"/v1/studies/{sid}").json()["status"] == "queued"
    with Session(engine) as s:
        stored = s.get(Study, sid)
        assert stored is not None and stored.spec["search_space"]["one_cycle"] == \
            BOUNDS["one_cycle"]
    # A new study can no longer name it.
    again = client.post("/v1/studies", json=body)
    assert again.status_code == 422 and f"Unknown range test `{tid}`" in again.json()["detail"]


def test_active_range_test_limit_is_429_until_one_finishes(client: TestClient,
                                                           settings: Settings) -> None:
    settings.max_active_range_tests = 2
    first = submit(client)
    submit(client)
    r = client.post("/v1/range-tests", json=BODY)
    assert r.status_code == 429 and r.json()["field"] == "tenant"
    assert "already has 2 queued or running range tests" in r.json()["detail"]
    assert "LRSEARCH_MAX_ACTIVE_RANGE_TESTS=2" in r.json()["detail"]
    assert client.post(f"/v1/range-tests/{first}/cancel").status_code == 200
    assert client.post("/v1/range-tests", json=BODY).status_code == 201
    assert client.get("/v1/range-tests").json()["total"] == 3


def big_sweeps(points: int, repeats: int) -> list[dict[str, Any]]:
    lrs = [1e-5 * 10 ** (5 * i / points) for i in range(points)]
    losses = [2.0 - i / points for i in range(points)]
    return [{"lrs": lrs, "losses": losses, "smoothed": losses, "diverged": False,
             "suggestions": {"valley": 0.02}} for _ in range(repeats)]


def test_the_list_leaves_the_sweeps_out(client: TestClient, engine: Engine) -> None:
    tids = [submit(client) for _ in range(3)]
    for tid in tids[:2]:
        finish(engine, tid, big_sweeps(20_000, 3))  # ~1.5 MB of curves each
    full = client.get(f"/v1/range-tests/{tids[0]}")
    assert len(full.json()["sweeps"]) == 3 and len(full.content) > 1_000_000

    statements: list[str] = []
    app_engine = client.app.state.engine  # type: ignore[attr-defined]

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(app_engine, "before_cursor_execute", seen)
    try:
        page = client.get("/v1/range-tests")
    finally:
        event.remove(app_engine, "before_cursor_execute", seen)
    assert page.status_code == 200 and page.json()["total"] == 3
    assert len(page.content) < 10_000
    items = {item["id"]: item for item in page.json()["items"]}
    for tid in tids[:2]:
        assert "sweeps" not in items[tid]
        assert items[tid]["suggestions"] == SUGGESTIONS
        assert items[tid]["family_bounds"] == BOUNDS
        assert items[tid]["status"] == "succeeded" and items[tid]["request"]["num_iter"] == 50
    assert items[tids[2]]["suggestions"] is None and items[tids[2]]["status"] == "queued"
    # The result column itself is never read whole, only the two parts the list shows.
    whole = re.compile(r"(SELECT|,)\s*range_tests\.result\s*(,|FROM|AS)", re.I)
    assert not [s for s in statements if whole.search(s)], statements

    index = client.get("/ui")
    assert index.status_code == 200 and tids[0] in index.text and "0.02" in index.text
    assert len(index.content) < 100_000
    detail = client.get(f"/ui/range-tests/{tids[0]}")
    assert detail.status_code == 200 and "one_cycle" in detail.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_list_survives_a_nan_in_a_stored_sweep(client: TestClient, engine: Engine) -> None:
    """SQLite keeps a diverged sweep's NaN in the stored text, which its JSON functions refuse;
    the list still shows that test's suggestions. (PostgreSQL's JSONB cannot hold NaN.)"""
    tid = submit(client)
    finish(engine, tid, [{"lrs": [0.1, 1.0], "losses": [1.0, math.nan],
                          "smoothed": [1.0, math.inf], "diverged": True, "suggestions": {}}])
    page = client.get("/v1/range-tests")
    assert page.status_code == 200, page.text
    item = page.json()["items"][0]
    assert item["suggestions"] == SUGGESTIONS and "sweeps" not in item
