"""Model registry: shapes from the dataset, seed 000's parameter count, clear errors."""

from __future__ import annotations

import pytest

from lrsearch import models
from lrsearch.errors import ModelError


def test_small_cnn_has_seed_000_parameter_count() -> None:
    model = models.build("small_cnn", {}, (32, 32, 3), 2)
    assert model.count_params() == 25_546
    assert [layer.__class__.__name__ for layer in model.layers] == [
        "Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense"]


def test_mlp_seed_004_shape() -> None:
    model = models.build("mlp", {"hidden": [9, 9, 9]}, (3,), 3)
    # 3*9+9 + 2*(9*9+9) + 9*3+3
    assert model.count_params() == 36 + 180 + 30
    assert model.output_shape == (None, 3)


def test_resnet20_is_the_cifar_resnet() -> None:
    model = models.build("resnet20", {}, (32, 32, 3), 10)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len([c for c in convs if c.kernel_size == (3, 3)]) == 19  # + the dense layer = 20
    assert 260_000 < model.count_params() < 280_000
    assert model.output_shape == (None, 10)


def test_resnet50_from_keras_applications_without_weights() -> None:
    model = models.build("resnet50", {}, (32, 32, 3), 2)
    assert model.name == "resnet50" and model.output_shape == (None, 2)


@pytest.mark.parametrize("name,params,shape,fragment", [
    ("nope", {}, (3,), "Known models: mlp"),
    ("mlp", {"layers": 3}, (3,), "unknown parameter `layers`"),
    ("mlp", {"hidden": [0]}, (3,), "`hidden`"),
    ("mlp", {"activation": "sigmoidal"}, (3,), "`activation`"),
    ("small_cnn", {}, (3,), "needs (height, width, channels)"),
    ("resnet50", {}, (8, 8, 1), "at least 32x32"),
])
def test_bad_model_requests_raise_model_error(name: str, params: dict, shape: tuple,
                                              fragment: str) -> None:
    with pytest.raises(ModelError) as info:
        models.build(name, params, shape, 3)
    assert fragment in str(info.value)
