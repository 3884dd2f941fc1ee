"""lrsearch.client.Client against the running server: every endpoint, `wait()` with a timeout,
and one error type carrying the API's `type` and `detail`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest

from lrsearch import schedules
from lrsearch.client import Client, ClientError
from tests.e2e.conftest import SMALL_STUDY, Server


def decode(png: bytes) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(png), format="png")


def test_catalog_endpoints(server: Server) -> None:
    with server.client() as c:
        assert c.health() == {"status": "ok"} and c.ready()["status"] == "ready"
        assert {s["name"] for s in c.schedules()} == set(schedules.names())
        assert c.schedule("one_cycle")["name"] == "one_cycle"
        preview = c.preview("step_decay", {"lr0": 0.1, "epochs_drop": 2}, epochs=4,
                            steps_per_epoch=3)
        assert preview["lr"] == schedules.curve("step_decay", {"lr0": 0.1, "epochs_drop": 2},
                                                steps_per_epoch=3, epochs=4).tolist()
        assert "mlp" in {m["name"] for m in c.models()}
        assert "sgd" in {o["name"] for o in c.optimizers()}


def test_study_endpoints(server: Server, finished_study: dict[str, Any]) -> None:
    sid = finished_study["id"]
    with server.client() as c:
        assert c.study(sid)["status"] == "succeeded"
        assert sid in {s["id"] for s in c.studies(status="succeeded")["items"]}
        trials = c.all_trials(sid)
        assert len(trials) == c.trials(sid, limit=2)["total"] == 4
        best = c.best(sid)
        assert best["value"] == max(t["value"] for t in trials)
        assert {row["family"] for row in best["leaderboard"]} <= {"cosine", "constant"}
        one = c.trial(sid, best["trial_number"])
        assert one["value"] == best["value"] and len(one["history"]) == 2
        for kind in ("lr_curves", "history", "leaderboard"):
            pixels = decode(c.study_plot(sid, kind))
            assert pixels.shape[0] > 100 and float(np.std(pixels)) > 0.01
        # The same study again with the same Idempotency-Key: no new study.
        assert c.submit(SMALL_STUDY, idempotency_key="e2e-study")["id"] == sid


def test_errors_carry_the_apis_type_and_detail(server: Server,
                                               finished_study: dict[str, Any]) -> None:
    with server.client() as c:
        with pytest.raises(ClientError) as missing:
            c.study("nope")
        assert (missing.value.status, missing.value.type) == (404, "not_found")
        assert "Unknown study `nope`" in missing.value.detail
        with pytest.raises(ClientError) as invalid:
            c.submit({"family": "cosine", "dataset": "digits", "epochs": 2, "n_trials": 1,
                      "batch_size": -1})
        assert (invalid.value.status, invalid.value.type) == (422, "validation_error")
        assert "batch_size" in invalid.value.detail
        with pytest.raises(ClientError) as conflict:
            c.cancel(finished_study["id"])
        assert conflict.value.type == "conflict" and conflict.value.field == "status"
        with pytest.raises(ClientError) as plot:
            c.study_plot(finished_study["id"], "nope")
        assert plot.value.status == 422 and "kind" in plot.value.detail
    with Client("http://127.0.0.1:9") as dead, pytest.raises(ClientError) as unreachable:
        dead.health()
    assert unreachable.value.type == "unreachable" and unreachable.value.status == 0


def test_wait_times_out_with_a_clear_error(server: Server) -> None:
    with server.client() as c:
        # Far too many trials to finish in 0.3 s; cancelled right after.
        study = c.submit({"family": "constant", "dataset": "digits", "epochs": 1,
                          "n_trials": 50})
        try:
            seen: list[str] = []
            with pytest.raises(ClientError) as timeout:
                c.wait(study["id"], timeout=0.3, poll=0.1,
                       on_progress=lambda s: seen.append(s["status"]))
            assert timeout.value.type == "timeout" and "after 0.3 s" in timeout.value.detail
            assert seen and set(seen) <= {"queued", "running"}
        finally:
            assert c.cancel(study["id"])["status"] == "cancelled"
        done = c.wait(study["id"], timeout=120, poll=0.5)
        assert done["status"] == "cancelled"


def test_range_test_and_dataset_endpoints(server: Server,
                                          finished_range_test: dict[str, Any],
                                          tmp_path: Path) -> None:
    with server.client() as c:
        test = c.get_range_test(finished_range_test["id"])
        assert test["suggestions"]["valley"]["median"] is not None
        assert finished_range_test["id"] in {t["id"] for t in c.range_tests()["items"]}
        pixels = decode(c.range_test_plot(finished_range_test["id"]))
        assert float(np.std(pixels)) > 0.01
        rng = np.random.default_rng(1)
        path = tmp_path / "tiny.npz"
        np.savez(path, x_train=rng.normal(size=(50, 3)).astype("float32"),
                 y_train=rng.integers(0, 2, 50), x_val=rng.normal(size=(10, 3)),
                 y_val=rng.integers(0, 2, 10))
        info = c.upload_dataset("tiny", path)
        assert (info["train_samples"], info["val_samples"]) == (50, 10)
        assert c.dataset("tiny")["sha256"] == info["sha256"]
        assert "tiny" in {d["name"] for d in c.datasets()}
        c.delete_dataset("tiny")
        with pytest.raises(ClientError) as gone:
            c.dataset("tiny")
        assert gone.value.status == 404
