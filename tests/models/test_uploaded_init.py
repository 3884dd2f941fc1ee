"""An uploaded model made into the model a trial trains (lrsearch.models.resolve), measured
before the first training step: `init="uploaded"` is the saved model (its validation accuracy
to the last digit), `init="fresh"` the same architecture newly initialised (near chance). A
file changed since upload is refused; a compiled upload keeps its loss and metrics unless the
spec names its own."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from lrsearch import datasets
from lrsearch.datasets.base import Dataset
from lrsearch.errors import ModelError
from lrsearch.models.resolve import compiled_model
from lrsearch.spec import DataRef, RunSpec, UploadedModel

pytestmark = pytest.mark.slow  # trains a small model once, for the module

TOP3 = "top3"  # a metric the upload was compiled with, which no head's defaults include


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return datasets.load("digits", seed=0)


@pytest.fixture(scope="module")
def trained(digits: Dataset, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, dict[str, float]]:
    """A small functional model trained above 0.9 validation accuracy, saved compiled; with
    what it scores on the validation split."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(digits.input_shape)
    x = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    net = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    net.compile(keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                metrics=["accuracy",
                         keras.metrics.SparseTopKCategoricalAccuracy(k=3, name=TOP3)])
    net.fit(digits.x_train, digits.y_train, epochs=15, batch_size=64, verbose=0)
    scores = net.evaluate(digits.x_val, digits.y_val, verbose=0, return_dict=True)
    assert scores["accuracy"] > 0.9, scores
    path = tmp_path_factory.mktemp("trained") / "digits.keras"
    net.save(path)
    return path, scores


def spec_for(path: Path, init: str, **kwargs: Any) -> RunSpec:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    model = UploadedModel(upload="mine", sha256=digest, init=init,  # type: ignore[arg-type]
                          compiled=True, file=str(path))
    return RunSpec(model=model, data=DataRef(name="digits"), **kwargs)


def built(spec: RunSpec, digits: Dataset) -> keras.Model:
    return compiled_model(spec, digits.input_shape, digits.head, keras.optimizers.SGD(0.1))


def scores_of(net: keras.Model, digits: Dataset) -> dict[str, float]:
    return net.evaluate(digits.x_val, digits.y_val, verbose=0, return_dict=True)


def test_uploaded_starts_from_the_saved_weights(trained: tuple[Path, dict[str, float]],
                                                digits: Dataset) -> None:
    path, saved = trained
    scores = scores_of(built(spec_for(path, "uploaded"), digits), digits)
    np.testing.assert_allclose(scores["accuracy"], saved["accuracy"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(scores["loss"], saved["loss"], rtol=1e-6)


def test_fresh_starts_from_new_weights(trained: tuple[Path, dict[str, float]],
                                       digits: Dataset) -> None:
    path, _ = trained
    keras.utils.set_random_seed(1)
    net = built(spec_for(path, "fresh"), digits)
    assert scores_of(net, digits)["accuracy"] < 2 / digits.head.units
    keras.utils.set_random_seed(1)
    again = built(spec_for(path, "fresh"), digits)
    for a, b in zip(net.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the seed decides the fresh weights


def test_a_file_changed_since_upload_is_refused(trained: tuple[Path, dict[str, float]],
                                               digits: Dataset, tmp_path: Path) -> None:
    path, _ = trained
    spec = spec_for(path, "uploaded")
    changed = tmp_path / "changed.keras"
    shutil.copy(path, changed)
    with open(changed, "ab") as f:
        f.write(b"\0")
    assert isinstance(spec.model, UploadedModel)
    moved = spec.model_copy(update={"model": spec.model.model_copy(
        update={"file": str(changed)})})
    with pytest.raises(ModelError, match="`mine` changed since it was uploaded") as info:
        built(moved, digits)
    assert info.value.field == "model.upload"
    gone = spec.model_copy(update={"model": spec.model.model_copy(
        update={"file": str(tmp_path / "missing.keras")})})
    with pytest.raises(ModelError, match="`mine` is missing"):
        built(gone, digits)


def test_a_compiled_upload_keeps_its_metrics_unless_the_spec_names_them(
        trained: tuple[Path, dict[str, float]], digits: Dataset) -> None:
    path, saved = trained
    own = scores_of(built(spec_for(path, "uploaded"), digits), digits)
    assert {"loss", "accuracy", TOP3} <= set(own)
    np.testing.assert_allclose(own[TOP3], saved[TOP3], atol=1e-7)
    overridden = scores_of(built(spec_for(path, "uploaded", loss="sparse_categorical_crossentropy",
                                          metrics=("sparse_categorical_accuracy",)), digits),
                           digits)
    assert set(overridden) == {"loss", "sparse_categorical_accuracy"}
    np.testing.assert_allclose(overridden["sparse_categorical_accuracy"], saved["accuracy"],
                               atol=1e-7)
