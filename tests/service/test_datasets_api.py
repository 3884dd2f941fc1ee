"""/v1/datasets: built-ins, .npz uploads validated before anything is kept, deletes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from lrsearch import datasets
from service.config import Settings
from service.datasets.models import UploadedDataset
from service.main import create_app
from tests.service.helpers import count


def npz(**arrays: object) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


GOOD = npz(x_train=np.random.default_rng(0).random((20, 4)), y_train=np.arange(20) % 2)


def upload(client: TestClient, name: str, content: bytes):
    return client.post("/v1/datasets", data={"name": name},
                       files={"file": ("d.npz", content, "application/octet-stream")})


def files_under(settings: Settings) -> list[Path]:
    root = Path(settings.data_dir)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_builtins_are_listed_with_availability(client: TestClient) -> None:
    listed = {d["name"]: d for d in client.get("/v1/datasets").json()}
    assert listed["digits"]["available"] and listed["digits"]["input_shape"] == [8, 8, 1]
    assert listed["cifar10"]["files"][0] == "cifar-10-python.tar.gz"
    digits = client.get("/v1/datasets/digits").json()
    assert (digits["task"], digits["num_classes"], digits["target_shape"]) == ("classes", 10, [])


def test_upload_list_use_and_delete(client: TestClient, engine: Engine,
                                    settings: Settings) -> None:
    r = upload(client, "tiny", GOOD)
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["input_shape"] == [4] and info["num_classes"] == 2 and len(info["sha256"]) == 64
    assert info["task"] == "classes" and info["target_shape"] == []
    assert client.get("/v1/datasets/tiny").json()["train_samples"] == 16
    assert upload(client, "tiny", GOOD).status_code == 409
    study = client.post("/v1/studies", json={"family": "constant", "dataset": "tiny",
                                             "epochs": 2, "n_trials": 1})
    assert study.status_code == 201
    busy = client.delete("/v1/datasets/tiny")
    assert busy.status_code == 409 and study.json()["id"] in busy.json()["detail"]
    client.post(f"/v1/studies/{study.json()['id']}/cancel")
    assert client.delete("/v1/datasets/tiny").status_code == 204
    assert client.get("/v1/datasets/tiny").status_code == 404
    assert files_under(settings) == [] and count(engine, UploadedDataset) == 0


def test_float_targets_are_a_regression_dataset(client: TestClient, settings: Settings,
                                               engine: Engine) -> None:
    """A float `y` uploads as float targets: listed with task "targets", its shape per sample
    and no classes; models are sized for it (one linear output per target)."""
    rng = np.random.default_rng(0)
    x = rng.random((20, 4))
    for name, y, shape in [("reg1", rng.normal(size=20), []),
                           ("reg3", rng.normal(size=(20, 3)).astype(np.float32), [3])]:
        r = upload(client, name, npz(x_train=x, y_train=y))
        assert r.status_code == 201, r.text
        assert (r.json()["task"], r.json()["num_classes"], r.json()["target_shape"]) == (
            "targets", None, shape)
    listed = {d["name"]: d for d in client.get("/v1/datasets").json()}
    assert listed["reg3"]["task"] == "targets" and listed["reg3"]["target_shape"] == [3]
    assert listed["reg1"]["target_shape"] == [] and listed["digits"]["task"] == "classes"
    with engine.connect() as connection:
        stored = connection.scalar(select(UploadedDataset.path).where(
            UploadedDataset.name == "reg3"))
    loaded = datasets.load("reg3", file=stored)
    assert loaded.y_train.dtype == np.float32 and loaded.y_train.shape == (16, 3)
    # mlp with no hidden layer: (4 + 1) x 3 weights for 3 targets; one more is refused.
    body = {"dataset": "reg3", "min_lr": 1e-5, "max_lr": 1.0, "num_iter": 50,
            "model": {"name": "mlp", "params": {"hidden": []}}}
    with TestClient(create_app(settings.model_copy(update={"max_model_params": 14}))) as c:
        refused = c.post("/v1/range-tests", json=body)
        assert refused.status_code == 422
        assert "15 parameters for input shape (4,) and float targets of shape (3,)" in \
            refused.json()["detail"]
    with TestClient(create_app(settings.model_copy(update={"max_model_params": 15}))) as c:
        assert c.post("/v1/range-tests", json=body).status_code == 201


def test_bad_uploads_store_nothing(client: TestClient, engine: Engine,
                                   settings: Settings) -> None:
    cases = [
        ("nan", npz(x_train=np.full((4, 2), np.nan), y_train=np.array([0, 1, 0, 1])),
         422, "x_train"),
        ("nantargets", npz(x_train=np.zeros((4, 2)), y_train=np.array([0.5, np.nan, 1, 2])),
         422, "`y_train` contains NaN"),
        ("pickled", npz(x_train=np.array([{}] * 4, dtype=object), y_train=np.arange(4) % 2),
         422, "pickle"),
        ("notzip", b"hello", 422, "zip"),
        ("../escape", GOOD, 422, "name"),
        ("huge", b"\0" * 400_000, 413, "bytes"),
    ]
    for name, content, status, fragment in cases:
        r = upload(client, name, content)
        assert r.status_code == status, (name, r.text)
        assert fragment in r.json()["detail"], (name, r.json())
    assert count(engine, UploadedDataset) == 0 and files_under(settings) == []


def test_builtin_cannot_be_deleted_and_unknown_is_404(client: TestClient) -> None:
    assert client.delete("/v1/datasets/digits").status_code == 409
    assert client.delete("/v1/datasets/nope").status_code == 404
