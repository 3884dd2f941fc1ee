"""Dataset references through the API, with the registration's end played by the same service
functions the worker's `dataset` job calls (service/datasets/registration.py) and facts from
the real reader (lrsearch.datasets.register), so the pending window is held open on purpose:

- work submitted on a pending dataset waits (its jobs are not claimable), then is queued with
  its run completed (the registration's facts in, the built-in model fitted to the shape);
- a failed registration fails the waiting study and range test with its reason, and refuses
  new work; a model that does not fit the registered shape fails the study, naming why;
- a reference outside the roots stores nothing; the per-tenant pending limit is a 429;
- deleting a pending dataset that a study waits for is a 409; deleting it otherwise takes its
  registration job along.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from lrsearch.datasets.references import parse_roots
from lrsearch.datasets.register import register
from lrsearch.datasets.uploaded import inflated_prefix, open_npz
from lrsearch.spec import RunSpec
from service.config import Settings
from service.datasets import registration
from service.datasets.models import UploadedDataset
from service.jobs import ops as jobs
from service.jobs.models import Job
from service.main import create_app
from service.migrations import migrate
from service.range_tests.models import RangeTest
from service.studies.models import Study
from tests.datasets.data_files import write_npy
from tests.service.helpers import count

STUDY: dict[str, Any] = {"family": "constant", "epochs": 2, "n_trials": 2,
                         "model": {"name": "mlp", "params": {"hidden": [8]}}}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


@pytest.fixture
def api(settings: Settings, engine: Engine, root: Path) -> Any:
    configured = settings.model_copy(update={"data_roots": parse_roots([str(root)]),
                                             "max_pending_datasets": 2})
    migrate(configured, engine)
    with TestClient(create_app(configured)) as c:
        yield c, configured


def row(engine: Engine, name: str) -> UploadedDataset:
    with Session(engine) as s:
        found = s.scalar(select(UploadedDataset).where(UploadedDataset.name == name))
        assert found is not None
        s.expunge(found)
        return found


def states(engine: Engine, **where: Any) -> list[str]:
    with Session(engine) as s:
        query = select(Job.state).filter_by(**where).order_by(Job.id)
        return list(s.scalars(query))


def end_registration(engine: Engine, settings: Settings, name: str, root: Path,
                     error: str | None = None) -> None:
    """What the worker's dataset job does when the child answers: the real reader's facts,
    or a failure reason."""
    with Session(engine) as s, s.begin():
        found = s.scalar(select(UploadedDataset).where(UploadedDataset.name == name))
        assert found is not None and found.reference is not None
        if error is not None:
            registration.fail(s, found, error)
        else:
            facts = register(found.reference, parse_roots([str(root)]))
            registration.succeed(s, settings, found, facts)


def post(client: TestClient, name: str, uri: Path | str) -> Any:
    return client.post("/v1/datasets", json={"name": name, "source": {"kind": "npy",
                                                                       "uri": str(uri)}})


def test_work_waits_for_the_registration_then_runs_on_its_facts(api: Any, engine: Engine,
                                                                  root: Path) -> None:
    client, settings = api
    arrays = write_npy(root / "arrays", 100, shape=(4,), classes=3)
    r = post(client, "arrays", arrays)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending" and "train_samples" not in r.json()
    study = client.post("/v1/studies", json={**STUDY, "dataset": "arrays"})
    assert study.status_code == 201, study.text
    test = client.post("/v1/range-tests", json={"dataset": "arrays", "num_iter": 10,
                                                "model": STUDY["model"]})
    assert test.status_code == 201, test.text
    sid, tid = study.json()["id"], test.json()["id"]
    assert states(engine, study_id=sid) == ["waiting", "waiting"]
    assert states(engine, range_test_id=tid) == ["waiting"]
    # The tenant's older queued work does not hold the registration up ...
    digits = client.post("/v1/studies", json={**STUDY, "dataset": "digits"}).json()["id"]
    with Session(engine) as s:  # ... created before it, for the test
        s.execute(update(Job).where(Job.study_id == digits).values(
            created_at=datetime(2020, 1, 1, tzinfo=UTC)))
        s.commit()
    with Session(engine) as s, s.begin():
        claim = jobs.claim(s, "w1", 30)
        assert claim is not None and claim.kind == "dataset"
    client.post(f"/v1/studies/{digits}/cancel")
    with Session(engine) as s, s.begin():  # waiting jobs cannot be claimed
        assert jobs.claim(s, "w2", 30) is None

    end_registration(engine, settings, "arrays", root)
    assert states(engine, study_id=sid) == ["queued", "queued"]
    assert states(engine, range_test_id=tid) == ["queued"]
    info = client.get("/v1/datasets/arrays").json()
    assert (info["status"], info["train_samples"], info["val_samples"], info["input_shape"],
            info["num_classes"]) == ("ready", 80, 20, [4], 3)
    with Session(engine) as s:
        run = RunSpec.from_stored(s.get(Study, sid).spec)
        assert run.data.registered is not None and run.data.registered.train_examples == 80
        assert run.model.params["hidden"] == [8] and "activation" in run.model.params
        test_run = RunSpec.from_stored(s.get(RangeTest, tid).spec)
        assert test_run.data.registered == run.data.registered
    # Submitted once it is ready: queued at once, with the facts.
    later = client.post("/v1/studies", json={**STUDY, "dataset": "arrays"}).json()
    assert states(engine, study_id=later["id"]) == ["queued", "queued"]


def test_a_failed_registration_fails_the_waiting_work_and_refuses_new(api: Any,
                                                                     engine: Engine,
                                                                     root: Path) -> None:
    client, settings = api
    arrays = write_npy(root / "arrays", 40, shape=(4,), classes=2)
    post(client, "arrays", arrays)
    sid = client.post("/v1/studies", json={**STUDY, "dataset": "arrays"}).json()["id"]
    tid = client.post("/v1/range-tests", json={"dataset": "arrays", "num_iter": 10}).json()["id"]
    end_registration(engine, settings, "arrays", root, error="`y.npy` holds one class")
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == "failed" and "`y.npy` holds one class" in study["error"]
    assert states(engine, study_id=sid) == ["cancelled", "cancelled"]
    test = client.get(f"/v1/range-tests/{tid}").json()
    assert test["status"] == "failed" and "failed registration" in test["error"]
    info = client.get("/v1/datasets/arrays").json()
    assert info["status"] == "failed" and "input_shape" not in info
    refused = client.post("/v1/studies", json={**STUDY, "dataset": "arrays"})
    assert refused.status_code == 422 and "failed registration" in refused.json()["detail"]


def test_a_model_that_does_not_fit_the_registered_shape_fails_the_study(
        api: Any, engine: Engine, root: Path) -> None:
    client, settings = api
    post(client, "wide", write_npy(root / "wide", 40, shape=(4000,), classes=2))
    huge = {**STUDY, "dataset": "wide", "model": {"name": "mlp", "params": {"hidden": [20000]}}}
    sid = client.post("/v1/studies", json=huge).json()["id"]
    end_registration(engine, settings.model_copy(update={"max_model_params": 1_000_000}),
                     "wide", root)
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == "failed", study
    assert "dataset `wide` as registered (model.params.hidden)" in study["error"]
    assert "max_model_params" in study["error"]


def test_refusals_store_nothing_and_pending_registrations_are_bounded(api: Any,
                                                                      engine: Engine,
                                                                      root: Path,
                                                                      tmp_path: Path) -> None:
    client, _ = api
    outside = write_npy(tmp_path / "outside", 10, shape=(2,), classes=2)
    for uri in (outside, f"{root}/../outside", "relative/arrays"):
        r = post(client, "x", uri)
        assert r.status_code == 422 and r.json()["field"].startswith("source"), r.text
    r = client.post("/v1/datasets", json={"name": "x", "source": {"kind": "npy"}})
    assert r.status_code == 422, r.text
    r = client.post("/v1/datasets", json={"name": "x", "source": {"kind": "parquet",
                                                                   "uri": str(root)}})
    assert r.status_code == 422, r.text
    assert count(engine, UploadedDataset) == 0 and count(engine, Job) == 0
    for name in ("a", "b"):
        assert post(client, name, write_npy(root / name, 10, shape=(2,), classes=2)
                    ).status_code == 201
    r = post(client, "c", root / "a")
    assert r.status_code == 429 and "LRSEARCH_MAX_PENDING_DATASETS" in r.json()["detail"]
    assert post(client, "a", root / "a").status_code == 409


def test_deleting_a_pending_dataset(api: Any, engine: Engine, root: Path) -> None:
    client, _ = api
    post(client, "arrays", write_npy(root / "arrays", 20, shape=(2,), classes=2))
    sid = client.post("/v1/studies", json={**STUDY, "dataset": "arrays"}).json()["id"]
    r = client.delete("/v1/datasets/arrays")
    assert r.status_code == 409 and sid in r.json()["detail"]
    client.post(f"/v1/studies/{sid}/cancel")
    assert states(engine, study_id=sid) == ["cancelled", "cancelled"]
    assert client.delete("/v1/datasets/arrays").status_code == 204
    assert states(engine, kind="dataset") == []
    assert (root / "arrays" / "x.npy").exists()  # a reference's files are the tenant's own


def test_deleting_an_upload_removes_what_workers_inflated(client: TestClient,
                                                          settings: Settings,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "up.npz"
    np.savez_compressed(path, x_train=np.ones((10, 3), np.float32), y_train=np.arange(10) % 2)
    with open(path, "rb") as f:
        r = client.post("/v1/datasets", data={"name": "up"}, files={"file": ("up.npz", f)})
    assert r.status_code == 201, r.text
    with Session(client.app.state.engine) as s:  # where the API stored it
        stored = Path(s.scalar(select(UploadedDataset.path)))
    mapped = open_npz(stored, data_dir=Path(settings.data_dir).resolve())  # as a worker does
    assert mapped.train[0].shape == (10, 3)
    prefix = inflated_prefix(Path(settings.data_dir).resolve(), stored)
    assert list(prefix.parent.glob(f"{prefix.name}.*"))
    assert client.delete("/v1/datasets/up").status_code == 204
    assert not stored.exists() and not list(prefix.parent.glob(f"{prefix.name}.*"))


def test_a_reaped_registration_fails_its_dataset_and_the_sweep_its_work(
        api: Any, engine: Engine, root: Path) -> None:
    """A registration job that runs out of attempts (a crashed child, a lost worker) leaves
    the dataset failed; the reaper's sweep then fails what waited for it."""
    client, settings = api
    post(client, "arrays", write_npy(root / "arrays", 20, shape=(2,), classes=2))
    sid = client.post("/v1/studies", json={**STUDY, "dataset": "arrays"}).json()["id"]
    with Session(engine) as s, s.begin():
        claim = jobs.claim(s, "w1", 30)
        assert claim is not None and claim.kind == "dataset"
        jobs.retry_or_fail(s, jobs.fenced(s, claim), "child process died (exit code -11)", 1)
    info = client.get("/v1/datasets/arrays").json()
    assert info["status"] == "failed" and "exit code -11" in info["error"]
    assert states(engine, study_id=sid) == ["waiting", "waiting"]
    with Session(engine) as s, s.begin():
        assert registration.sweep(s, settings) == 1
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == "failed" and "exit code -11" in study["error"]
    with Session(engine) as s, s.begin():
        assert registration.sweep(s, settings) == 0  # nothing waits any more


def test_a_dataset_ready_between_the_checks_and_the_lock_is_completed(
        api: Any, engine: Engine, root: Path) -> None:
    """What a submission does when the registration ended after its first checks but before
    it took the creation lock: it stores the completed run and queues its jobs."""
    from service.runs import recheck
    from service.studies.ops import validate
    from service.studies.schemas import StudyCreate

    client, settings = api
    post(client, "arrays", write_npy(root / "arrays", 30, shape=(2,), classes=2))
    with Session(engine) as s:
        spec = validate(s, settings, "local", StudyCreate(**STUDY, dataset="arrays"))
    assert RunSpec.from_stored(spec).data.registered is None
    end_registration(engine, settings, "arrays", root)
    with Session(engine) as s:
        stored, waiting = recheck(s, settings, "local", spec)
    run = RunSpec.from_stored(stored)
    assert waiting is False and run.data.registered is not None
    assert "activation" in run.model.params  # fitted to the registered shape


def test_roots_per_tenant_and_the_data_directory(settings: Settings, engine: Engine,
                                                 tmp_path: Path) -> None:
    """`{tenant}` in a root gives each tenant its own folder; no root may hold the service's
    data directory, and no symlink inside a root reaches it."""
    shared, common = tmp_path / "shared", tmp_path / "common"
    configured = settings.model_copy(update={
        "data_roots": parse_roots([str(shared / "{tenant}"), str(common)])})
    mine = write_npy(shared / "local" / "mine", 10, shape=(2,), classes=2)
    theirs = write_npy(shared / "other" / "theirs", 10, shape=(2,), classes=2)
    inside = write_npy(Path(settings.data_dir) / "inside", 10, shape=(2,), classes=2)
    common.mkdir()
    os.symlink(inside, common / "link")
    with TestClient(create_app(configured)) as client:
        assert client.get("/v1/data-roots").json()["roots"] == [str(shared / "local"),
                                                                 str(common)]
        assert post(client, "mine", mine).status_code == 201
        for uri in (theirs, inside, common / "link"):
            r = post(client, "nope", uri)
            assert r.status_code == 422 and "LRSEARCH_DATA_ROOTS" in r.json()["detail"], r.text
    for root in (tmp_path, Path(settings.data_dir) / "inside", f"{tmp_path}/{{tenant}}"):
        with pytest.raises(ValueError, match="must not contain LRSEARCH_DATA_DIR"):
            Settings(database_url=settings.database_url, data_dir=settings.data_dir,
                     data_roots=[str(root)])
