"""GET /v1/studies/{id} reads the summary row: its query count does not grow with trials."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event, insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.db import utcnow
from service.studies.models import Trial


def queries_during(engine: Engine, call: Any) -> int:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(statements)


def test_status_poll_cost_is_independent_of_trial_count(client: TestClient,
                                                        engine: Engine) -> None:
    app_engine = client.app.state.engine  # type: ignore[attr-defined]
    small = client.post("/v1/studies", json={"family": "constant", "dataset": "digits",
                                             "epochs": 2, "n_trials": 10}).json()["id"]
    big = client.post("/v1/studies", json={"family": "constant", "dataset": "digits",
                                           "epochs": 2, "n_trials": 50}).json()["id"]
    now = utcnow()
    with Session(engine) as s, s.begin():
        s.execute(insert(Trial), [
            {"study_id": big, "slot": i, "number": i, "family": "constant",
             "params": {"lr": 0.01}, "state": "complete", "value": i / 5000, "attempt": 1,
             "started_at": now} for i in range(5000)])
    few = queries_during(app_engine, lambda: client.get(f"/v1/studies/{small}"))
    many = queries_during(app_engine, lambda: client.get(f"/v1/studies/{big}"))
    assert client.get(f"/v1/studies/{big}").status_code == 200
    assert many == few <= 3
