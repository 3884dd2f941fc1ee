"""/v1/datasets: built-ins, .npz uploads validated before anything is kept, deletes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from service.config import Settings
from service.datasets.models import UploadedDataset
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
    assert client.get("/v1/datasets/digits").json()["num_classes"] == 10


def test_upload_list_use_and_delete(client: TestClient, engine: Engine,
                                    settings: Settings) -> None:
    r = upload(client, "tiny", GOOD)
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["input_shape"] == [4] and info["num_classes"] == 2 and len(info["sha256"]) == 64
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


def test_bad_uploads_store_nothing(client: TestClient, engine: Engine,
                                   settings: Settings) -> None:
    cases = [
        ("nan", npz(x_train=np.full((4, 2), np.nan), y_train=np.array([0, 1, 0, 1])),
         422, "x_train"),
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
