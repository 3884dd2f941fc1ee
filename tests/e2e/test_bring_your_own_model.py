"""Bring your own model and objective, end to end against the real `lrsearch serve` (whose
worker imports the operator plugin `byom_layers`, see conftest.PLUGIN):

- a functional model of the test's own (two branches merged, batch normalisation, the plugin's
  custom layer) saved, uploaded with the CLI, range-tested with the CLI, searched by a
  2-family study through the Python client, and a /best whose Keras config deserializes;
- a regression study (float targets, val_mae minimised, direction inferred) and a binary
  classification study optimising val_auc;
- an objective the model does not log fails the study after one trial, naming what it logs;
- the plugin ran in worker processes only, never in the API.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import lrsearch.schedules.keras  # noqa: F401  (registers lrsearch>FamilySchedule)
from lrsearch.client import Client, ClientError
from tests.e2e.conftest import Server, run_cli


@pytest.fixture(scope="module")
def plugin(server: Server) -> Any:
    """The plugin module, imported here too: the test builds its model with the layer."""
    sys.path.insert(0, str(server.folder / "plugins"))
    os.environ.setdefault("BYOM_MARKER", str(server.folder / "plugin-imports"))
    import byom_layers  # type: ignore[import-not-found]

    # The worker publishes what it can load once its child imported the plugins.
    deadline = time.monotonic() + 180
    with server.client() as c:
        while not any(m["name"] == "wide_mlp" for m in c.models()):
            assert time.monotonic() < deadline, server.logs()
            time.sleep(0.5)
    return byom_layers


def two_branch_model(plugin: Any) -> keras.Model:
    inputs = keras.Input((8, 8, 1), name="pixels")  # the bundled digits
    flat = keras.layers.Flatten()(inputs)
    a = keras.layers.Dense(16, activation="relu")(flat)
    b = plugin.Scale()(keras.layers.BatchNormalization()(flat))
    b = keras.layers.Dense(16, activation="tanh")(b)
    merged = keras.layers.Concatenate()([a, b])
    net = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(merged))
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    return net


def wait(c: Client, study: dict[str, Any], server: Server) -> dict[str, Any]:
    done = c.wait(study["id"], timeout=600, poll=0.5)
    assert done["status"] in ("succeeded", "failed"), (done, server.logs())
    return done


def test_an_uploaded_functional_model_with_a_plugin_layer_end_to_end(
        server: Server, plugin: Any, tmp_path: Path) -> None:
    path = tmp_path / "two_branch.keras"
    two_branch_model(plugin).save(path)
    uploaded = run_cli(server, "models", "upload", "two-branch", str(path))
    assert uploaded.returncode == 0, uploaded.stderr
    listed = json.loads(run_cli(server, "models", "list", "--json").stdout)
    mine = next(m for m in listed if m["name"] == "two-branch")
    assert mine["source"] == "upload" and mine["custom_objects"] == ["byom>Scale"]
    assert mine["input_shapes"] == [[None, 8, 8, 1]] and mine["output_shapes"] == [[None, 10]]
    assert {"wide_mlp", "mlp"} <= {m["name"] for m in listed}  # plugin builder, built-in

    rt = run_cli(server, "range-test", "--dataset", "digits", "--upload", "two-branch",
                 "--num-iter", "30", "--batch-size", "64", "--wait", "--json")
    assert rt.returncode == 0, rt.stderr + server.logs()
    result = json.loads(rt.stdout)
    assert result["status"] == "succeeded" and len(result["sweeps"][0]["lrs"]) > 5

    with server.client() as c:
        study = c.submit({"families": ["cosine", "constant"], "dataset": "digits",
                          "model": {"upload": "two-branch", "init": "uploaded"},
                          "epochs": 2, "batch_size": 128, "n_trials": 2, "seed": 5,
                          "pruner": {"name": "none"}, "sampler": {"name": "random"}})
        done = wait(c, study, server)
        assert done["status"] == "succeeded", (done, server.logs())
        best = c.best(study["id"])
        trials = c.all_trials(study["id"])
    # The uploaded model keeps its own loss and metrics; every logged metric is stored.
    assert set(best["history"][0]["metrics"]) >= {"loss", "val_loss", "accuracy",
                                                  "val_accuracy"}
    assert best["metric"] == "val_accuracy" and best["direction"] == "maximize"
    assert sorted(t["seed"] for t in trials) == [5 + t["number"] for t in
                                                 sorted(trials, key=lambda t: t["seed"])]
    schedule = keras.optimizers.schedules.deserialize(best["keras"])
    assert float(schedule(0)) == pytest.approx(best["history"][0]["lr_first"], rel=1e-5)


def test_regression_and_auc_objectives(server: Server, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x @ np.arange(1, 7, dtype=np.float32) / 6).astype(np.float32)  # float targets
    np.savez(tmp_path / "reg.npz", x_train=x, y_train=y)
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)  # binary class ids
    np.savez(tmp_path / "bin.npz", x_train=x, y_train=labels)
    inputs = keras.Input((6,))
    binary = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.Dense(8, activation="relu")(inputs)))
    binary.compile(optimizer="sgd", loss="binary_crossentropy",
                   metrics=[keras.metrics.AUC(name="auc")])
    binary.save(tmp_path / "binary.keras")
    with server.client() as c:
        c.upload_dataset("reg-targets", tmp_path / "reg.npz")
        c.upload_dataset("bin-labels", tmp_path / "bin.npz")
        c.upload_model("binary-head", tmp_path / "binary.keras")
        regression = c.submit({"family": "constant", "dataset": "reg-targets",
                               "objective": {"metric": "val_mae"}, "epochs": 2,
                               "batch_size": 64, "n_trials": 1, "pruner": {"name": "none"},
                               "search_space": {"constant": {"lr": {"low": 0.01,
                                                                    "high": 0.05}}}})
        auc = c.submit({"family": "constant", "dataset": "bin-labels",
                        "model": {"upload": "binary-head"},
                        "objective": {"metric": "val_auc"}, "epochs": 2, "batch_size": 64,
                        "n_trials": 1, "pruner": {"name": "none"}})
        unknown = c.submit({"family": "constant", "dataset": "digits",
                            "objective": {"metric": "val_f1", "direction": "maximize"},
                            "epochs": 1, "batch_size": 256, "n_trials": 3})
        with pytest.raises(ClientError) as no_direction:
            c.submit({"family": "constant", "dataset": "digits", "epochs": 1, "n_trials": 1,
                      "objective": {"metric": "cosine_similarity"}})
        reg_done, auc_done = wait(c, regression, server), wait(c, auc, server)
        unknown_done = wait(c, unknown, server)
        reg_best, auc_best = c.best(regression["id"]), c.best(auc["id"])
        unknown_trials = c.all_trials(unknown["id"])
    assert reg_done["status"] == "succeeded", reg_done
    assert (reg_best["metric"], reg_best["direction"]) == ("val_mae", "minimize")
    assert reg_best["value"] == reg_best["history"][-1]["metrics"]["val_mae"]
    assert auc_done["status"] == "succeeded", auc_done
    assert (auc_best["metric"], auc_best["direction"]) == ("val_auc", "maximize")
    assert 0.0 <= auc_best["value"] <= 1.0
    assert no_direction.value.status == 422 and no_direction.value.field == "objective.direction"
    # The unknown objective: the first trial fails with the names the model logs, the other
    # slots never run, and the study fails with the same reason.
    assert unknown_done["status"] == "failed", unknown_done
    assert "val_f1" in unknown_done["error"] and "val_accuracy" in unknown_done["error"]
    failed = [t for t in unknown_trials if t["state"] == "failed"]
    assert len(failed) == 1 and "val_loss" in failed[0]["failure_reason"]
    assert unknown_done["counts"]["failed"] == 1 and unknown_done["counts"]["cancelled"] == 2


def test_the_plugin_ran_only_in_workers(server: Server, plugin: Any) -> None:
    """Every process that imported the plugin is a worker's (the marker holds pids); the API
    (the `lrsearch serve` process) and this test's client calls never did."""
    with server.client() as c:
        assert any(m["name"] == "wide_mlp" for m in c.models())
    importers = {int(p) for p in (server.folder / "plugin-imports").read_text().split()}
    assert importers and server.pid not in importers
    assert importers - {os.getpid()}, importers
