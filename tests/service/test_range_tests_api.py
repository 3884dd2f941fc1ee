"""/v1/range-tests: submission, validation, idempotency; a finished test seeds a study's
search space."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.jobs.models import Job
from service.range_tests.models import RangeTest
from tests.service.helpers import count

BODY = {"dataset": "digits", "min_lr": 1e-5, "max_lr": 1.0, "num_iter": 50}


def test_submit_creates_one_job(client: TestClient, engine: Engine) -> None:
    r = client.post("/v1/range-tests", json=BODY)
    assert r.status_code == 201, r.text
    test = r.json()
    assert test["status"] == "queued" and test["sweeps"] is None
    with Session(engine) as s:
        jobs = s.scalars(select(Job).where(Job.range_test_id == test["id"])).all()
    assert [j.kind for j in jobs] == ["range_test"]
    assert client.get(f"/v1/range-tests/{test['id']}").json()["id"] == test["id"]
    assert client.get("/v1/range-tests").json()["total"] == 1


@pytest.mark.parametrize("change,named", [
    ({"min_lr": 2.0}, "max_lr"), ({"min_lr": 0}, "min_lr"), ({"num_iter": 2000}, "num_iter"),
    ({"repeats": 6}, "repeats"), ({"mode": "log"}, "mode"), ({"dataset": "nope"}, "nope"),
    ({"model": {"name": "small_cnn"}, "dataset": "synthetic_argmax"}, "small_cnn"),
    ({"diverge_threshold": 0.5}, "diverge_threshold"), ({"extra": True}, "extra"),
])
def test_bad_range_tests_are_rejected(client: TestClient, engine: Engine,
                                      change: dict[str, Any], named: str) -> None:
    r = client.post("/v1/range-tests", json={**BODY, **change})
    assert r.status_code == 422, r.text
    assert named in r.json()["detail"] or named in str(r.json().get("errors"))
    assert count(engine, RangeTest) == 0 and count(engine, Job) == 0


def test_idempotent_retry(client: TestClient, engine: Engine) -> None:
    h = {"Idempotency-Key": "k1"}
    a = client.post("/v1/range-tests", json=BODY, headers=h).json()
    b = client.post("/v1/range-tests", json=BODY, headers=h).json()
    assert a["id"] == b["id"] and count(engine, Job) == 1
    assert client.post("/v1/range-tests", json={**BODY, "num_iter": 60},
                       headers=h).status_code == 409
    assert client.get("/v1/range-tests/nope").status_code == 404


def test_study_bounds_come_from_a_finished_range_test(client: TestClient,
                                                      engine: Engine) -> None:
    tid = client.post("/v1/range-tests", json=BODY).json()["id"]
    body = {"family": "one_cycle", "dataset": "digits", "epochs": 5, "n_trials": 2,
            "range_test_id": tid}
    pending = client.post("/v1/studies", json=body)
    assert pending.status_code == 422 and "has not succeeded" in pending.json()["detail"]
    bounds = {"one_cycle": {"max_lr": {"low": 0.05, "high": 0.5, "log": True}},
              "constant": {"lr": {"low": 0.01, "high": 0.1, "log": True}}}
    with Session(engine) as s, s.begin():
        test = s.get(RangeTest, tid)
        assert test is not None
        test.status, test.result = "succeeded", {"sweeps": [], "suggestions": {},
                                                 "family_bounds": bounds}
    r = client.post("/v1/studies", json={**body, "search_space": {
        "one_cycle": {"pct_start": {"value": 0.25}}}})
    assert r.status_code == 201, r.text
    from service.studies.models import Study

    with Session(engine) as s:
        study = s.get(Study, r.json()["id"])
        assert study is not None
        assert study.spec["search_space"]["one_cycle"] == {
            "max_lr": {"low": 0.05, "high": 0.5, "log": True}, "pct_start": {"value": 0.25}}
