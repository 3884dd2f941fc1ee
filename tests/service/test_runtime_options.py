"""The training options `mixed_precision` and `jit_compile`: validated by the API (errors name
the field and the value), stored in the run a study's trials and a range test train, and
(lrsearch.runtime) turned into the dtype policy and the `jit_compile` Keras compiles with.
That they reach a worker's training and show in each trial's record is
tests/worker/test_backends.py's."""

from __future__ import annotations

from typing import Any

import keras
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from lrsearch import runtime
from lrsearch.models import Head
from lrsearch.models.resolve import compiled_model
from lrsearch.spec import RunSpec
from service.range_tests.models import RangeTest
from service.studies.models import Study

STUDY = {"family": "constant", "dataset": "digits", "epochs": 1, "n_trials": 1}
RANGE_TEST = {"dataset": "digits", "num_iter": 10}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("field", "value"), [
    ("mixed_precision", "yes"), ("mixed_precision", 1), ("mixed_precision", None),
    ("jit_compile", "sometimes"), ("jit_compile", "true"), ("jit_compile", 0),
])
@pytest.mark.parametrize("path", ["/v1/studies", "/v1/range-tests"])
def test_bad_options_are_refused_by_name(client: TestClient, path: str, field: str,
                                         value: Any) -> None:
    body = {**(STUDY if path == "/v1/studies" else RANGE_TEST), field: value}
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert field in r.text
    assert client.get(path).json()["total"] == 0  # nothing stored


@pytest.mark.parametrize(("options", "stored"), [
    ({}, {"mixed_precision": False, "jit_compile": "auto"}),
    ({"mixed_precision": True, "jit_compile": False},
     {"mixed_precision": True, "jit_compile": False}),
    ({"jit_compile": True}, {"mixed_precision": False, "jit_compile": True}),
])
def test_options_are_stored_in_the_run(client: TestClient, engine: Engine,
                                       options: dict[str, Any], stored: dict[str, Any]) -> None:
    sid = client.post("/v1/studies", json={**STUDY, **options}).json()["id"]
    tid = client.post("/v1/range-tests", json={**RANGE_TEST, **options}).json()["id"]
    with Session(engine) as s:
        study, test = s.get(Study, sid), s.get(RangeTest, tid)
        assert study is not None and test is not None
        for spec in (study.spec, test.spec):
            assert spec is not None
            run = RunSpec.from_stored(spec)
            assert {"mixed_precision": run.mixed_precision,
                    "jit_compile": run.jit_compile} == stored


def test_a_run_stored_before_the_options_reads_as_float32_and_auto() -> None:
    stored = RunSpec.builtin("digits").stored()
    del stored["mixed_precision"], stored["jit_compile"]
    run = RunSpec.from_stored({"run": stored})
    assert run.mixed_precision is False and run.jit_compile == "auto"


def test_the_policy_follows_the_option_and_the_device_and_is_reset_for_the_next_run() -> None:
    assert runtime.precision_policy(False, "gpu") == "float32"
    assert runtime.precision_policy(True, "gpu") == "mixed_float16"
    assert runtime.precision_policy(True, "cpu") == "mixed_bfloat16"
    base = RunSpec.builtin("digits", "mlp", {"hidden": [8]})
    try:
        mixed = runtime.prepare(base.model_copy(update={"mixed_precision": True,
                                                        "jit_compile": True}))
        assert mixed.policy == "mixed_bfloat16" and mixed.device == "cpu"  # no GPU here
        model = compiled_model(base, (64,), _head(), keras.optimizers.SGD(0.1),
                               jit_compile=mixed.jit_compile)
        # The hidden layers compute in bfloat16 and keep float32 variables: the policy was
        # applied; the output layer computes in float32 (a precise softmax and loss)
        assert model.layers[0].compute_dtype == "bfloat16"
        assert model.layers[-1].compute_dtype == "float32"
        assert all(v.dtype == "float32" for v in model.trainable_variables)
        record = mixed.provenance(model)
        assert record["precision_policy"] == "mixed_bfloat16" and record["xla"] is True
        assert record["layer_policies"] == ["float32", "mixed_bfloat16"]
        assert record["compiler"] == "xla"
        # A run without the option after it trains in float32 again, in the same process
        plain = runtime.prepare(base)
        model = compiled_model(base, (64,), _head(), keras.optimizers.SGD(0.1),
                               jit_compile=plain.jit_compile)
        assert model.layers[0].compute_dtype == "float32"
        assert plain.provenance(model)["precision_policy"] == "float32"
    finally:
        keras.config.set_dtype_policy("float32")


def _head() -> Head:
    return Head.classes(10)
