"""POST /v1/datasets against hostile files: a compression bomb costs a real API process little
memory, lying headers and sizes are refused naming the array, nothing stays on disk after any
refusal, each tenant has a storage quota that racing uploads cannot overrun, and a dataset a
queued range test uses cannot be deleted."""

from __future__ import annotations

import io
import os
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.config import Settings
from service.datasets import ops
from service.datasets.models import UploadedDataset
from service.errors import TooLarge
from service.jobs.models import Job
from tests.datasets.test_npz_hardening import header_bytes, npy_bytes, patch_size, write_bomb
from tests.processes import LRSEARCH, free_port, wait_ready
from tests.service.helpers import count
from tests.service.test_datasets_api import GOOD, npz, upload

Y = np.array([0, 1, 0, 1, 0, 1])
# About 48 kB: three fill the quota below, while the refusals' files still fit beside one.
BIG = npz(x_train=np.random.default_rng(1).random((1200, 4)), y_train=np.arange(1200) % 2)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings, with a decompression bound small enough to hit cheaply and a
    quota of three BIG uploads."""
    return settings.model_copy(update={"max_decompressed_bytes": 20_000_000,
                                       "tenant_storage_bytes": 3 * len(BIG)})


def uploads_folder(settings: Settings) -> Path:
    return Path(settings.data_dir).resolve() / "uploads"


def on_disk(settings: Settings) -> list[str]:
    """Every file under the uploads folder, `*.part` included."""
    root = uploads_folder(settings)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


LYING_HEADER = zip_bytes({"x_train.npy": header_bytes((10**13, 1)) + np.zeros(6).tobytes(),
                          "y_train.npy": npy_bytes(Y)})
X = npy_bytes(np.ones((6, 3)))
LYING_SIZE = patch_size(zip_bytes({"x_train.npy": X + bytes(100_000),
                                   "y_train.npy": npy_bytes(Y)}), "x_train.npy", len(X))


def test_refusals_name_the_array_and_leave_nothing_on_disk(client: TestClient, engine: Engine,
                                                           settings: Settings,
                                                           tmp_path: Path) -> None:
    assert upload(client, "kept", GOOD).status_code == 201
    before = on_disk(settings)
    assert before == ["local/kept.npz"]
    bomb = write_bomb(tmp_path / "bomb.npz", 1 << 12, 2048).read_bytes()  # 32 MiB of zeros
    cases = [
        ("lying-header", LYING_HEADER, 422, "x_train",
         ["`x_train` declares shape (10000000000000, 1)"]),
        ("lying-size", LYING_SIZE, 422, "x_train", ["more data than the"]),
        ("bomb", bomb, 413, "file", ["max_decompressed_bytes=20000000",
                                     "LRSEARCH_MAX_DECOMPRESSED_BYTES"]),
        ("nan", npz(x_train=np.full((4, 2), np.nan), y_train=np.array([0, 1, 0, 1])), 422,
         "x_train", ["NaN"]),
        ("notzip", b"hello", 422, "file", ["zip"]),
    ]
    for name, content, status, field, fragments in cases:
        r = upload(client, name, content)
        assert r.status_code == status, (name, r.text)
        assert r.json()["field"] == field, (name, r.json())
        for fragment in fragments:
            assert fragment in r.json()["detail"], (name, r.json())
        assert on_disk(settings) == before, name
    assert count(engine, UploadedDataset) == 1


class Failing(io.RawIOBase):
    """An upload stream that breaks after its first megabyte (a client that goes away)."""

    def __init__(self) -> None:
        self.sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.sent >= 1 << 20:
            raise ConnectionResetError("the client went away")
        n = min(len(buffer), (1 << 20) - self.sent)
        buffer[:n] = bytes(n)
        self.sent += n
        return n


def test_an_unexpected_error_mid_upload_leaves_no_part_file(engine: Engine,
                                                            settings: Settings) -> None:
    with Session(engine) as session, pytest.raises(ConnectionResetError):
        ops.upload(session, settings.model_copy(update={"max_upload_bytes": 1 << 30}),
                   "local", "broken", io.BufferedReader(Failing()))
    assert on_disk(settings) == []


def test_tenant_quota_answers_413_with_the_figures(client: TestClient, engine: Engine,
                                                   settings: Settings) -> None:
    size = len(BIG)
    for name in ("a", "b", "c"):
        assert upload(client, name, BIG).status_code == 201
    r = upload(client, "d", BIG)
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    for figure in (f"used={3 * size}", f"this upload={size}",
                   f"tenant_storage_bytes={3 * size}", "LRSEARCH_TENANT_STORAGE_BYTES"):
        assert figure in detail, detail
    assert on_disk(settings) == ["local/a.npz", "local/b.npz", "local/c.npz"]
    assert client.delete("/v1/datasets/a").status_code == 204
    assert upload(client, "d", BIG).status_code == 201


def test_racing_uploads_cannot_both_pass_the_quota(engine: Engine, settings: Settings) -> None:
    """The first upload's transaction stays open; the second must wait for it, then count it."""
    tight = settings.model_copy(update={"tenant_storage_bytes": len(GOOD) + len(GOOD) // 2})
    outcome: dict[str, BaseException | str] = {}

    def second() -> None:
        with Session(engine) as session:
            try:
                ops.upload(session, tight, "local", "second", io.BytesIO(GOOD))
                session.commit()
                outcome["second"] = "stored"
            except BaseException as e:  # reported to the test thread
                session.rollback()
                outcome["second"] = e

    with Session(engine) as first:
        ops.upload(first, tight, "local", "first", io.BytesIO(GOOD))
        racer = threading.Thread(target=second)
        racer.start()
        racer.join(timeout=2)
        assert racer.is_alive(), f"the second upload did not wait: {outcome}"
        first.commit()
    racer.join(timeout=60)
    error = outcome["second"]
    assert isinstance(error, TooLarge), error
    assert f"used={len(GOOD)}" in error.detail
    assert count(engine, UploadedDataset) == 1
    assert on_disk(settings) == ["local/first.npz"]


def test_a_dataset_used_by_a_queued_range_test_cannot_be_deleted(client: TestClient,
                                                                 engine: Engine) -> None:
    assert upload(client, "tiny", GOOD).status_code == 201
    r = client.post("/v1/range-tests", json={"dataset": "tiny", "min_lr": 1e-4, "max_lr": 1.0,
                                              "num_iter": 20})
    assert r.status_code == 201, r.text
    test_id = r.json()["id"]
    busy = client.delete("/v1/datasets/tiny")
    assert busy.status_code == 409, busy.text
    assert test_id in busy.json()["detail"] and "range test" in busy.json()["detail"]
    with Session(engine) as s, s.begin():  # as a worker does when the test ends
        s.execute(update(Job).where(Job.range_test_id == test_id).values(state="done"))
    assert client.delete("/v1/datasets/tiny").status_code == 204


def vm_hwm_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM line")


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """A real `lrsearch api` process on SQLite (its own memory, its own /proc entry)."""
    env = {**os.environ, "LRSEARCH_DATABASE_URL": f"sqlite:///{tmp_path}/db/lrsearch.db",
           "LRSEARCH_DATA_DIR": str(tmp_path / "data")}
    subprocess.run([LRSEARCH, "migrate"], env=env, check=True, capture_output=True)
    port = free_port()
    log_path = tmp_path / "api.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([LRSEARCH, "api", "--port", str(port)], env=env,
                                stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log_path)
        yield url, proc, tmp_path / "data" / "uploads"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_compression_bomb_costs_the_api_process_little_memory(
        api_server: tuple[str, subprocess.Popen[bytes], Path], tmp_path: Path) -> None:
    url, proc, uploads = api_server
    rows, features = 1 << 18, 1024  # x_train: 1 GiB of float32 zeros
    bomb = write_bomb(tmp_path / "bomb.npz", rows, features)
    assert bomb.stat().st_size < 2_000_000
    with httpx.Client(base_url=url, timeout=300) as http:
        # Warm up: the first upload imports and allocates what every upload needs.
        warm = http.post("/v1/datasets", data={"name": "warm"},
                         files={"file": ("w.npz", GOOD, "application/octet-stream")})
        assert warm.status_code == 201, warm.text
        baseline = vm_hwm_bytes(proc.pid)
        with open(bomb, "rb") as f:
            r = http.post("/v1/datasets", data={"name": "bomb"},
                          files={"file": ("bomb.npz", f, "application/octet-stream")})
    grown = vm_hwm_bytes(proc.pid) - baseline
    assert grown < 400 << 20, f"the API's peak memory grew by {grown >> 20} MiB"
    # Accepted: zeros are valid inputs and 1 GiB is within LRSEARCH_MAX_DECOMPRESSED_BYTES.
    assert r.status_code == 201, r.text
    assert r.json()["train_samples"] + r.json()["val_samples"] == rows
    assert r.json()["input_shape"] == [features]
    assert sorted(p.name for p in uploads.rglob("*") if p.is_file()) == ["bomb.npz", "warm.npz"]
