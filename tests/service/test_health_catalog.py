"""Health, readiness and the catalog endpoints (schedules with previews, models, optimizers)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lrsearch import schedules
from service.config import Settings
from service.main import create_app
from tests.schedules.test_properties import DEFAULTS


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_not_ready_before_migrations(tmp_path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/empty.db")
    with TestClient(create_app(settings)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and "lrsearch migrate" in r.json()["detail"]


def test_schedules_catalog(client: TestClient) -> None:
    listed = client.get("/v1/schedules").json()
    assert [s["name"] for s in listed] == schedules.names()
    one = client.get("/v1/schedules/one_cycle").json()
    assert one == schedules.spec("one_cycle")
    missing = client.get("/v1/schedules/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


@pytest.mark.parametrize("family", schedules.names())
def test_preview_equals_the_library_curve(client: TestClient, family: str) -> None:
    params = DEFAULTS.get(family, {})
    body = {"params": params, "epochs": 12, "steps_per_epoch": 250, "points": 300}
    r = client.post(f"/v1/schedules/{family}/preview", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    lrs = schedules.curve(family, params, steps_per_epoch=250, epochs=12)
    assert len(data["step"]) <= 300
    assert data["step"][0] == 0 and data["step"][-1] == len(lrs) - 1
    np.testing.assert_array_equal(np.array(data["lr"]), lrs[data["step"]])
    assert data["epoch"] == pytest.approx([s / 250 for s in data["step"]])
    assert data["adaptive"] == (family == "reduce_on_plateau")


def test_preview_errors(client: TestClient) -> None:
    bad = client.post("/v1/schedules/cosine/preview",
                      json={"params": {"warmup_epochs": 20}, "epochs": 10, "steps_per_epoch": 5})
    assert bad.status_code == 422 and "warmup_epochs" in bad.json()["detail"]
    assert client.post("/v1/schedules/nope/preview",
                       json={"epochs": 1, "steps_per_epoch": 1}).status_code == 404
    big = client.post("/v1/schedules/constant/preview",
                      json={"epochs": 100000, "steps_per_epoch": 100000})
    assert big.status_code == 422 and "steps_per_epoch" in big.json()["detail"]


def test_models_and_optimizers(client: TestClient) -> None:
    assert {m["name"] for m in client.get("/v1/models").json()} == {
        "mlp", "small_cnn", "resnet20", "resnet50"}
    assert "adamw" in {o["name"] for o in client.get("/v1/optimizers").json()}


def test_openapi_is_served(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/studies/{study_id}/best" in paths and "/v1/range-tests" in paths
    assert client.get("/docs").status_code == 200


def test_api_process_never_imports_tensorflow(tmp_path) -> None:
    code = f"""
import sys
from fastapi.testclient import TestClient
from service import migrations
from service.config import Settings
from service.db import make_engine
from service.main import create_app
s = Settings(database_url="sqlite:///{tmp_path}/t.db", data_dir="{tmp_path}/data",
             allowed_hosts=["testserver"])
e = make_engine(s.database_url); migrations.migrate(s, e)
with TestClient(create_app(s)) as c:
    assert c.post("/v1/studies", json={{"family": "one_cycle", "dataset": "digits",
                  "epochs": 3, "n_trials": 2}}).status_code == 201
    preview = {{"epochs": 3, "steps_per_epoch": 4}}
    assert c.post("/v1/schedules/wsd/preview", json=preview).status_code == 200
    c.get("/v1/datasets"); c.get("/v1/models")
print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
