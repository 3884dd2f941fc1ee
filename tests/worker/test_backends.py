"""A study and a range test end to end on each Keras backend: a real worker process trains
them with TensorFlow, with JAX (`--backend jax`, in an interpreter that cannot import
TensorFlow, as on a GPU machine that has only JAX) and with PyTorch (`KERAS_BACKEND=torch`, the
other way to choose). Each trial applies its schedule's LR step for step (the first and last
step of every epoch equal the schedule's closed form at those steps) and records what it ran
on; the study's mixed precision and XLA options reach training and show in that record."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from lrsearch.range_test.sweep import ladder
from lrsearch.schedules import curve
from service.studies.models import CurvePoint
from tests.worker.conftest import Workers, finished, study_row, submit, trials, wait_for

WITHOUT_TENSORFLOW = str(Path(__file__).resolve().parents[1] / "without_tensorflow.py")
EPOCHS = 2
# Exponential decay per step: every step's LR differs, so a schedule applied at the wrong step
# shows in the first or last LR of an epoch.
SPACE = {"exponential": {"lr0": {"low": 0.05, "high": 0.2, "log": True},
                         "k": {"low": 0.2, "high": 0.6}, "per_epoch": {"value": False}}}
RANGE_TEST = {"dataset": "digits", "min_lr": 1e-4, "max_lr": 1.0, "num_iter": 12,
              "batch_size": 64, "diverge_threshold": 1e6}

# backend -> (how the worker is told, the study's options, the policy and XLA it must record)
CASES: dict[str, tuple[str, dict[str, Any], str, bool]] = {
    # XLA forced on (TensorFlow's "auto" is off on a CPU), mixed precision: bfloat16 on a CPU
    "tensorflow": ("flag", {"mixed_precision": True, "jit_compile": True}, "mixed_bfloat16",
                   True),
    # Keras' default: JAX compiles with XLA
    "jax": ("flag-without-tensorflow", {}, "float32", True),
    "torch": ("env", {"mixed_precision": True, "jit_compile": False}, "mixed_bfloat16", False),
}
LIBRARY = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def _start(workers: Workers, backend: str, how: str) -> None:
    if how == "env":
        workers.start(KERAS_BACKEND=backend)
        return
    command = [sys.executable, "-m", "worker", "--backend", backend]
    if how == "flag-without-tensorflow":
        command = [sys.executable, WITHOUT_TENSORFLOW, "-m", "worker", "--backend", backend]
    # KERAS_BACKEND set to another backend: the flag wins
    workers.start(command=command, KERAS_BACKEND="numpy")


def _check_provenance(record: dict[str, Any] | None, backend: str, policy: str,
                      xla: bool) -> None:
    assert record is not None
    assert record["backend"] == backend
    assert record["backend_version"].split("+")[0] == metadata.version(LIBRARY[backend]) \
        .split("+")[0]
    assert record["keras_version"] == keras.__version__
    assert record["device"] == "cpu" and record["device_name"]
    assert record["precision_policy"] == policy
    assert record["xla"] is xla


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("backend", list(CASES))
def test_a_study_and_a_range_test_run_on_every_backend(backend: str, client: TestClient,
                                                       engine: Engine,
                                                       workers: Workers) -> None:
    how, options, policy, xla = CASES[backend]
    sid = submit(client, family="exponential", epochs=EPOCHS, n_trials=2,
                 baseline={"enabled": False}, search_space=SPACE, **options)
    r = client.post("/v1/range-tests", json={**RANGE_TEST, **options})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    _start(workers, backend, how)
    wait_for(lambda: finished(engine, sid), 240, "the study to finish")
    assert study_row(engine, sid).status == "succeeded"

    rows = trials(engine, sid)
    assert [t.state for t in rows] == ["complete", "complete"]
    for row in rows:
        _check_provenance(row.provenance, backend, policy, xla)
        spe = row.steps_per_epoch
        assert spe is not None and spe > 1 and row.family == "exponential"
        assert row.params is not None
        lrs = curve(row.family, row.params, steps_per_epoch=spe, epochs=EPOCHS)
        with Session(engine) as s:
            points = s.query(CurvePoint).filter_by(trial_id=row.id).order_by(CurvePoint.epoch)
            got = [(p.epoch, p.lr_first, p.lr_last) for p in points]
        assert [e for e, _, _ in got] == list(range(EPOCHS))
        for epoch, first, last in got:
            assert first == pytest.approx(lrs[epoch * spe], rel=1e-5), (backend, epoch)
            assert last == pytest.approx(lrs[(epoch + 1) * spe - 1], rel=1e-5), (backend, epoch)
    shown = client.get(f"/v1/studies/{sid}/trials").json()["items"][0]["provenance"]
    _check_provenance(shown, backend, policy, xla)

    wait_for(lambda: client.get(f"/v1/range-tests/{tid}").json()["status"]
             in ("succeeded", "failed", "cancelled"), 240, "the range test to finish")
    test = client.get(f"/v1/range-tests/{tid}").json()
    assert test["status"] == "succeeded", test["error"]
    _check_provenance(test["provenance"], backend, policy, xla)
    [sweep] = test["sweeps"]
    assert sweep["lrs"] == pytest.approx(list(ladder(1e-4, 1.0, 12)), rel=1e-12)
    assert len(sweep["losses"]) == 12 and all(v > 0 for v in sweep["losses"])
    assert test["suggestions"]
