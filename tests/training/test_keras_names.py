"""The Keras names the API accepts without importing Keras are Keras' own: every loss and
metric identifier resolves, and so does every name the upload check treats as Keras' own
function."""

from __future__ import annotations

import keras
import pytest

from lrsearch import keras_names
from lrsearch.models.keras_file import KERAS_FUNCTIONS
from lrsearch.models.mlp import ACTIVATIONS


@pytest.mark.parametrize("name", keras_names.LOSSES)
def test_every_loss_name_resolves(name: str) -> None:
    assert keras.losses.get(name) is not None


@pytest.mark.parametrize("name", keras_names.METRICS)
def test_every_metric_name_resolves(name: str) -> None:
    assert keras.metrics.get(name) is not None


def test_the_upload_checks_keras_functions_are_keras_own() -> None:
    for name in KERAS_FUNCTIONS:
        if name in ACTIVATIONS:
            assert callable(keras.activations.get(name))
        else:
            assert name in keras_names.LOSSES or name in keras_names.METRICS
