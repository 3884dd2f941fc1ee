"""Bring your own data, end to end against the real `lrsearch serve` (tests/e2e/conftest.py:
data roots `roots/shared` and `roots/other`, a local CIFAR-10 mirror):

- an image folder (PNG files in class subfolders), a regression CSV, a TFRecord of
  serialized `tf.train.Example`s and `.npy` arrays are registered through the API (a worker's
  `dataset` job reads them: `pending`, then `ready` with the right counts), listed, and used
  by a study and a range test each; a study submitted while its dataset is still pending
  waits, then runs;
- the image-folder study runs on two worker processes sharing the root;
- refusals: a URI outside the roots, `..`, a symlink leaving a root (422 at submission, nothing
  stored), a folder with one class, a CSV without its target column, an unreadable image
  (`failed` with the reason, no counts; a study on it is refused);
- a file changed after registration fails the next trial with the reason;
- `cifar10` registered as a Keras dataset is downloaded from the mirror once and reused.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lrsearch.client import Client, ClientError
from tests.datasets.data_files import write_csv, write_image_folder, write_npy, write_tfrecord
from tests.e2e.conftest import Server
from tests.processes import LRSEARCH

STUDY: dict[str, Any] = {"families": ["constant"], "epochs": 1, "batch_size": 16,
                         "n_trials": 1, "pruner": {"name": "none"},
                         "model": {"name": "mlp", "params": {"hidden": [8]}},
                         "search_space": {"constant": {"lr": {"low": 0.01, "high": 0.1}}}}
RANGE_TEST: dict[str, Any] = {"min_lr": 1e-4, "max_lr": 1.0, "num_iter": 12, "batch_size": 16,
                              "model": {"name": "mlp", "params": {"hidden": [8]}}}


def register(c: Client, name: str, source: dict[str, Any]) -> dict[str, Any]:
    info = c.register_dataset(name, source)
    assert info["status"] == "pending" and "train_samples" not in info, info
    return info


def ready(c: Client, name: str, server: Server) -> dict[str, Any]:
    info = c.wait_dataset(name, timeout=300, poll=0.3)
    assert info["status"] == "ready", (info, server.logs())
    return info


def failed(c: Client, name: str, server: Server) -> dict[str, Any]:
    info = c.wait_dataset(name, timeout=300, poll=0.3)
    assert info["status"] == "failed", (info, server.logs())
    assert "train_samples" not in info and "input_shape" not in info, info
    return info


@pytest.fixture(scope="module")
def second_worker(server: Server) -> Iterator[subprocess.Popen[bytes]]:
    """Another worker process on the same database and the same data roots."""
    log = server.folder / "worker-2.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([LRSEARCH, "worker"], cwd=server.folder, env=server.server_env,
                                stdout=out, stderr=out, start_new_session=True)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_each_kind_registered_listed_and_trained(server: Server,
                                                 second_worker: subprocess.Popen[bytes]
                                                 ) -> None:
    shared = server.roots / "shared"
    images = write_image_folder(shared / "pets", {"cat": 24, "dog": 20, "fox": 16})
    csv = write_csv(shared / "houses.csv", 120, features=3, target="price")
    tfrecord = write_tfrecord(shared / "records" / "part-0.tfrecord", 90, shape=(4,),
                              classes=3)
    npy = write_npy(shared / "arrays", 100, shape=(4,), classes=3)
    sources = {
        "pets": {"kind": "image_folder", "uri": str(images), "image_size": [8, 8],
                 "val_fraction": 0.25},
        "houses": {"kind": "csv", "uri": str(csv), "target": "price", "val_fraction": 0.25},
        "records": {"kind": "tfrecord", "uri": str(tfrecord.parent), "input": "x",
                    "target": "y", "features": {"x": {"dtype": "float32", "shape": [4]},
                                                "y": {"dtype": "int64"}}},
        "arrays": {"kind": "npy", "uri": str(npy), "val_fraction": 0.2},
    }
    expected = {"pets": (45, 15, [8, 8, 3], "classes"), "houses": (90, 30, [3], "targets"),
                "records": (72, 18, [4], "classes"), "arrays": (80, 20, [4], "classes")}
    with server.client() as c:
        for name, source in sources.items():
            register(c, name, source)
        # Submitted while its dataset may still be pending: the study waits, then runs.
        early = c.submit({**STUDY, "name": "houses-early", "dataset": "houses",
                          "objective": {"metric": "val_loss"}})
        infos = {name: ready(c, name, server) for name in sources}
        for name, (train, val, shape, task) in expected.items():
            info = infos[name]
            assert (info["train_samples"], info["val_samples"], info["input_shape"],
                    info["task"]) == (train, val, shape, task), info
        assert infos["pets"]["classes"] == ["cat", "dog", "fox"]
        assert infos["pets"]["num_classes"] == 3
        listed = {d["name"]: d for d in c.datasets()}
        assert all(listed[name]["status"] == "ready" for name in sources), listed

        # Two worker processes share the root: the image-folder study's four trials run on
        # both (each trial outlasts a claim poll, so the idle worker takes the next slot).
        pets = c.submit({**STUDY, "name": "pets-two-workers", "dataset": "pets",
                         "n_trials": 4, "epochs": 2})
        studies = [early, pets]
        for name in ("records", "arrays"):
            studies.append(c.submit({**STUDY, "name": f"{name}-study", "dataset": name}))
        tests = [c.range_test({**RANGE_TEST, "dataset": name}) for name in sources]
        for study in studies:
            done = c.wait(study["id"], timeout=600, poll=0.5)
            assert done["status"] == "succeeded", (done, c.all_trials(study["id"]),
                                                   server.logs())
        for test in tests:
            done = c.wait_range_test(test["id"], timeout=600, poll=0.5)
            assert done["status"] == "succeeded", (done, server.logs())
            assert len(done["sweeps"][0]["lrs"]) >= 2
        trials = c.all_trials(pets["id"])
        assert {t["state"] for t in trials} == {"complete"}
        # Steps per epoch come from the registered count: ceil(45 / 16).
        assert {t["steps_per_epoch"] for t in trials} == {3}
        assert len({t["worker"] for t in trials}) == 2, [t["worker"] for t in trials]


def test_refusals_are_clear_and_store_nothing(server: Server, tmp_path: Path) -> None:
    shared, other = server.roots / "shared", server.roots / "other"
    outside = write_image_folder(tmp_path / "outside", {"a": 2, "b": 2})
    os.symlink(outside, shared / "escape")
    with server.client() as c:
        cases = [(str(outside), "LRSEARCH_DATA_ROOTS"),
                 (f"{shared}/../../outside", ".."),
                 (str(shared / "escape"), "escape")]
        for uri, says in cases:
            with pytest.raises(ClientError) as e:
                c.register_dataset("refused", {"kind": "image_folder", "uri": uri})
            assert e.value.status == 422 and says in e.value.detail, e.value.detail
        with pytest.raises(ClientError) as e:
            c.dataset("refused")
        assert e.value.status == 404

        one_class = write_image_folder(other / "one-class", {"only": 5})
        no_target = write_csv(other / "no-target.csv", 20, features=2, target="y")
        broken = write_image_folder(other / "broken", {"a": 3, "b": 3})
        (broken / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        register(c, "one-class", {"kind": "image_folder", "uri": str(one_class)})
        register(c, "no-target", {"kind": "csv", "uri": str(no_target), "target": "price"})
        register(c, "broken", {"kind": "image_folder", "uri": str(broken)})
        reasons = {name: failed(c, name, server)["error"]
                   for name in ("one-class", "no-target", "broken")}
        assert "class" in reasons["one-class"] and "only" in reasons["one-class"], reasons
        assert "price" in reasons["no-target"] and "f0, f1, y" in reasons["no-target"], reasons
        assert "b/1.png" in reasons["broken"], reasons
        with pytest.raises(ClientError) as e:
            c.submit({**STUDY, "dataset": "broken"})
        assert e.value.status == 422 and "failed registration" in e.value.detail


def test_a_file_changed_after_registration_fails_the_next_trial(server: Server) -> None:
    folder = write_image_folder(server.roots / "other" / "drifting", {"a": 6, "b": 6})
    with server.client() as c:
        register(c, "drifting", {"kind": "image_folder", "uri": str(folder),
                                 "image_size": [8, 8]})
        ready(c, "drifting", server)
        write_image_folder(folder, {"a": 7})  # one more image in class a
        study = c.submit({**STUDY, "dataset": "drifting"})
        c.wait(study["id"], timeout=300, poll=0.5)
        (trial,) = c.all_trials(study["id"])
    assert trial["state"] == "failed"
    assert "changed since registration" in trial["failure_reason"], trial


def test_cifar10_is_downloaded_once_from_the_mirror_and_reused(server: Server) -> None:
    with server.client() as c:
        register(c, "c10", {"kind": "keras", "dataset": "cifar10"})
        info = ready(c, "c10", server)
        assert (info["train_samples"], info["val_samples"], info["input_shape"]) == \
            (40, 8, [32, 32, 3])
        downloads = len(server.mirror)
        register(c, "c10-again", {"kind": "keras", "dataset": "cifar10"})
        ready(c, "c10-again", server)
        assert len(server.mirror) == downloads == 1, server.mirror.paths
        builtin = next(d for d in c.datasets() if d["name"] == "cifar10")
        assert builtin["available"] is True
        test = c.range_test({**RANGE_TEST, "dataset": "c10"})
        done = c.wait_range_test(test["id"], timeout=300, poll=0.5)
        assert done["status"] == "succeeded", (done, server.logs())
