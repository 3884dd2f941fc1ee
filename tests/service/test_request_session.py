"""The request's session (service/deps.py, get_session): what a handler wrote is committed
before the answer is sent, and rolled back when the handler raises; a request that never
touches the database ends without a thread hop or a connection."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.auth import ops as auth
from service.deps import SessionDep
from service.errors import Conflict


def keys_of(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return [row.tenant for row in auth.list_keys(s)]


def test_committed_before_the_answer_rolled_back_on_error(client: TestClient,
                                                          engine: Engine) -> None:
    app: FastAPI = client.app  # type: ignore[assignment]
    engine_of_app: Engine = app.state.engine

    def write(session: SessionDep, fail: bool = False) -> dict[str, Any]:
        auth.create(session, "written")
        if fail:
            raise Conflict("refused after writing", field="fail")
        return {"ok": True}

    def nothing(session: SessionDep) -> dict[str, Any]:
        return {"checked_out": engine_of_app.pool.checkedout()}  # type: ignore[attr-defined]

    app.add_api_route("/test/write", write, methods=["POST"])
    app.add_api_route("/test/nothing", nothing, methods=["GET"])
    r = client.post("/test/write", params={"fail": True})
    assert r.status_code == 409 and "refused after writing" in r.json()["detail"]
    assert keys_of(engine) == []  # rolled back
    assert client.post("/test/write").status_code == 200
    assert keys_of(engine) == ["written"]  # committed when the answer came
    assert client.get("/test/nothing").json() == {"checked_out": 0}
    assert engine_of_app.pool.checkedout() == 0  # type: ignore[attr-defined]
