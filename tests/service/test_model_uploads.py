"""/v1/models: `.keras` uploads validated without running anything in them (refusals name the
culprit and leave no row and no file), accepted when a live worker's plugins register their
custom classes, referenced by studies and range tests (checked against the dataset), and
deleted only when nothing unfinished uses them; objectives with a direction table."""

from __future__ import annotations

import hashlib
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.config import Settings
from service.models.models import UploadedModel
from service.studies.models import Study
from service.workers import ops as workers
from tests.models.keras_archives import (
    CUSTOM_LAYER,
    functional,
    layer,
    rewritten,
    sequential,
    with_lambda,
)
from tests.service.helpers import count
from tests.service.test_datasets_api import npz

STUDY = {"family": "constant", "dataset": "digits", "epochs": 2, "n_trials": 1}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings (uploads up to 300 kB, bodies up to 200 kB), with a
    decompression bound a small bomb exceeds."""
    return settings.model_copy(update={"max_decompressed_bytes": 2_000_000})


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    return {"digits": functional(folder / "digits.keras"),
            "plain": functional(folder / "plain.keras", custom_layer=False),
            "four": sequential(folder / "four.keras"),
            "lambda": with_lambda(folder / "lambda.keras"),
            # 700 hidden units: about 210 kB of weights, over the 200 kB body limit.
            "wide": functional(folder / "wide.keras", hidden=700, custom_layer=False)}


def upload(client: TestClient, name: str, content: bytes) -> Any:
    return client.post("/v1/models", data={"name": name},
                       files={"file": ("m.keras", content, "application/octet-stream")})


def publish(engine: Engine, custom_objects: list[str], name: str = "w1",
            builders: list[dict[str, Any]] | None = None) -> None:
    """A live worker whose plugins register `custom_objects` and `builders` (as its presence
    thread writes them)."""
    with Session(engine) as s, s.begin():
        workers.seen(s, name, "host", 1, None, {"custom_objects": custom_objects,
                                                "builders": builders or []})


def stored_files(settings: Settings) -> list[Path]:
    """Every file under <data_dir>/models, `*.part` included."""
    root = Path(settings.data_dir) / "models"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def uploads_listed(client: TestClient) -> list[dict[str, Any]]:
    return [m for m in client.get("/v1/models").json() if m["source"] == "upload"]


def stored_run(engine: Engine, study_id: str) -> dict[str, Any]:
    with Session(engine) as s:
        study = s.get(Study, study_id)
        assert study is not None
        return dict(study.spec["run"])


def test_refusals_name_the_culprit_and_store_nothing(client: TestClient, engine: Engine,
                                                     settings: Settings,
                                                     archives: dict[str, Path],
                                                     tmp_path: Path) -> None:
    bomb = rewritten(archives["four"], tmp_path / "bomb.keras",
                     extra={"assets/zeros": bytes(5_000_000)})
    huge = rewritten(archives["four"], tmp_path / "huge.keras",
                     extra={"assets/noise": np.random.default_rng(0).bytes(320_000)})
    cases = [
        ("lam", archives["lambda"].read_bytes(), 422, "`Lambda` layer `doubler`"),
        ("custom", archives["digits"].read_bytes(), 422, f"`{CUSTOM_LAYER}`"),
        ("npz", npz(x_train=np.zeros((4, 2)), y_train=np.arange(4)), 422,
         "Not a Keras model archive"),
        ("text", b"hello", 422, "not a zip archive"),
        ("bomb", bomb.read_bytes(), 413, "LRSEARCH_MAX_DECOMPRESSED_BYTES=2000000"),
        ("huge", huge.read_bytes(), 413, "LRSEARCH_MAX_UPLOAD_BYTES"),
    ]
    for name, content, status, fragment in cases:
        r = upload(client, name, content)
        assert r.status_code == status, (name, r.text)
        assert fragment in r.json()["detail"], (name, r.json())
        assert r.json()["field"] == "file", (name, r.json())
    bad_name = upload(client, "../escape", archives["four"].read_bytes())
    assert bad_name.status_code == 422 and "name" in bad_name.json()["detail"]
    assert uploads_listed(client) == [] and count(engine, UploadedModel) == 0
    assert stored_files(settings) == []


def test_no_user_code_runs_in_the_api(client: TestClient, engine: Engine, settings: Settings,
                                      archives: dict[str, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload whose custom layer claims to come from an importable module with a visible
    side effect is refused, and the module was never imported."""
    module = f"tests_sidefx_{uuid.uuid4().hex[:12]}"
    marker = tmp_path / "imported"
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{module}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "class Boom:\n    pass\n")
    monkeypatch.syspath_prepend(str(code))
    publish(engine, [CUSTOM_LAYER])  # the real custom layer is registered: only the claim fails

    def claim(registered: str | None) -> Any:
        def edit(config: dict[str, Any]) -> None:
            scale = layer(config, "Scale")
            scale.update(module=module, class_name="Boom", registered_name=registered)
        return edit

    for registered, named in [(f"{module}>Boom", f"`{module}>Boom`"),
                              (None, f"`{module}.Boom`")]:
        path = rewritten(archives["digits"], tmp_path / "sfx.keras", claim(registered))
        r = upload(client, "sidefx", path.read_bytes())
        assert r.status_code == 422, r.text
        assert named in r.json()["detail"]
    assert not marker.exists() and module not in sys.modules
    assert uploads_listed(client) == [] and stored_files(settings) == []
    # The module does run when imported: the marker proves it would have been seen.
    __import__(module)
    assert marker.read_text() == "ran"
    del sys.modules[module]


def test_upload_list_use_and_delete(client: TestClient, engine: Engine, settings: Settings,
                                    archives: dict[str, Path]) -> None:
    builder = {"name": "tiny_net", "description": "a plugin's builder", "source": "plugin",
               "parameters": [{"name": "width", "default": 8, "description": "units"}]}
    publish(engine, [CUSTOM_LAYER, "other>Thing"], builders=[builder])
    content = archives["digits"].read_bytes()
    r = upload(client, "mine", content)
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["sha256"] == hashlib.sha256(content).hexdigest()
    assert (info["source"], info["name"], info["size_bytes"]) == ("upload", "mine", len(content))
    assert info["input_shapes"] == [[None, 8, 8, 1]] and info["output_shapes"] == [[None, 10]]
    assert info["custom_objects"] == [CUSTOM_LAYER] and info["compiled"] is False
    assert "path" not in info and str(settings.data_dir) not in r.text
    again = upload(client, "mine", content)
    assert again.status_code == 409 and again.json()["field"] == "name"
    listed = client.get("/v1/models").json()
    assert {m["source"] for m in listed} == {"builtin", "plugin", "upload"}
    assert [m for m in listed if m["source"] == "plugin"] == [builder]
    assert [m["name"] for m in listed if m["source"] == "upload"] == ["mine"]
    assert "mlp" in [m["name"] for m in listed if m["source"] == "builtin"]
    assert client.get("/v1/models/mine").json()["sha256"] == info["sha256"]
    [file] = stored_files(settings)
    assert file.name.startswith(info['sha256']) and file.read_bytes() == content

    study = client.post("/v1/studies", json={**STUDY, "model": {"upload": "mine",
                                                                 "init": "fresh"}})
    assert study.status_code == 201, study.text
    study_id = study.json()["id"]
    model = stored_run(engine, study_id)["model"]
    assert (model["kind"], model["upload"], model["sha256"], model["init"]) == (
        "upload", "mine", info["sha256"], "fresh")
    test = client.post("/v1/range-tests", json={"dataset": "digits", "min_lr": 1e-5,
                                                "max_lr": 1.0, "num_iter": 50,
                                                "model": {"upload": "mine"}})
    assert test.status_code == 201, test.text

    busy = client.delete("/v1/models/mine")
    assert busy.status_code == 409 and study_id in busy.json()["detail"]
    client.post(f"/v1/studies/{study_id}/cancel")
    busy = client.delete("/v1/models/mine")
    assert busy.status_code == 409 and test.json()["id"] in busy.json()["detail"]
    assert client.post(f"/v1/range-tests/{test.json()['id']}/cancel").status_code == 200
    assert client.delete("/v1/models/mine").status_code == 204
    assert client.get("/v1/models/mine").status_code == 404
    assert client.delete("/v1/models/mine").status_code == 404
    assert stored_files(settings) == [] and count(engine, UploadedModel) == 0


def test_two_names_for_one_content_keep_their_own_files(client: TestClient, engine: Engine,
                                                        settings: Settings,
                                                        archives: dict[str, Path]) -> None:
    """One file per upload: deleting one never takes the file another upload (committed, or
    still in flight) of the same content needs."""
    content = archives["plain"].read_bytes()  # built-in layers only: no worker needed
    a, b = upload(client, "a", content), upload(client, "b", content)
    assert a.status_code == b.status_code == 201 and a.json()["sha256"] == b.json()["sha256"]
    assert len(stored_files(settings)) == 2
    assert client.delete("/v1/models/a").status_code == 204
    left = stored_files(settings)
    assert len(left) == 1 and left[0].read_bytes() == content  # b's
    assert client.delete("/v1/models/b").status_code == 204
    assert stored_files(settings) == []


def test_a_model_over_the_body_limit_uploads_up_to_the_upload_limit(
        client: TestClient, settings: Settings, archives: dict[str, Path]) -> None:
    content = archives["wide"].read_bytes()
    assert settings.max_body_bytes < len(content) < settings.max_upload_bytes
    r = upload(client, "wide", content)
    assert r.status_code == 201, r.text
    assert r.json()["output_shapes"] == [[None, 10]]


def test_study_references_are_checked(client: TestClient, engine: Engine,
                                      archives: dict[str, Path]) -> None:
    unknown = client.post("/v1/studies", json={**STUDY, "model": {"upload": "nope"}})
    assert unknown.status_code == 422 and unknown.json()["field"] == "model.upload"
    assert "`nope`" in unknown.json()["detail"]
    assert upload(client, "four", archives["four"].read_bytes()).status_code == 201
    mismatch = client.post("/v1/studies", json={**STUDY, "model": {"upload": "four"}})
    assert mismatch.status_code == 422 and mismatch.json()["field"] == "model.upload"
    assert "shape (4,)" in mismatch.json()["detail"]
    assert "(8, 8, 1)" in mismatch.json()["detail"]
    # Accepted while a worker registers its class; refused once no live worker does.
    publish(engine, [CUSTOM_LAYER])
    assert upload(client, "mine", archives["digits"].read_bytes()).status_code == 201
    with Session(engine) as s, s.begin():
        workers.stopped(s, "w1")
    gone = client.post("/v1/studies", json={**STUDY, "model": {"upload": "mine"}})
    assert gone.status_code == 422 and CUSTOM_LAYER in gone.json()["detail"]
    assert client.get("/v1/studies").json()["total"] == 0


def test_objectives_with_and_without_a_direction(client: TestClient, engine: Engine) -> None:
    cosine = client.post("/v1/studies", json={**STUDY,
                                              "objective": {"metric": "cosine_similarity"}})
    assert cosine.status_code == 422 and cosine.json()["field"] == "objective.direction"
    assert "cosine_similarity" in cosine.json()["detail"]
    explicit = client.post("/v1/studies", json={**STUDY, "objective": {
        "metric": "val_cosine_similarity", "direction": "maximize"},
        "metrics": ["cosine_similarity"]})
    assert explicit.status_code == 201, explicit.text
    mae = client.post("/v1/studies", json={**STUDY, "objective": {"metric": "val_mae"}})
    assert mae.status_code == 201, mae.text
    assert stored_run(engine, mae.json()["id"])["objective"] == {"metric": "val_mae",
                                                                  "direction": "minimize"}
    assert mae.json()["request"]["objective"] == {"metric": "val_mae"}  # as sent
    legacy = client.post("/v1/studies", json={**STUDY, "metric": "val_loss"})
    assert legacy.status_code == 201, legacy.text
    assert stored_run(engine, legacy.json()["id"])["objective"] == {"metric": "val_loss",
                                                                     "direction": "minimize"}
    both = client.post("/v1/studies", json={**STUDY, "metric": "val_loss",
                                            "objective": {"metric": "val_loss"}})
    assert both.status_code == 422 and both.json()["field"] == "objective"

