"""Model registry: shapes from the dataset, seed 000's parameter count, clear errors; each
model's pure checks and parameter count (equal to Keras' count_params)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lrsearch import models
from lrsearch.errors import ModelError
from lrsearch.models.mlp import ACTIVATIONS


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


# Each model's rules are pure Python beside its builder: the API checks them at submission.

@pytest.mark.parametrize("name,params,field,fragment", [
    ("mlp", {"hidden": [65536] * 1000}, "model.params.hidden", "Received: 1000 layers"),
    ("mlp", {"hidden": [65537]}, "model.params.hidden", "65537"),
    ("mlp", {"hidden": [True]}, "model.params.hidden", "True"),
    ("mlp", {"hidden": 64}, "model.params.hidden", "hidden=64"),
    ("mlp", {"activation": "bogus"}, "model.params.activation", "activation='bogus'"),
    ("mlp", {"activation": "glu"}, "model.params.activation", "activation='glu'"),
    ("mlp", {"dropout": 7}, "model.params.dropout", "dropout=7"),
    ("mlp", {"dropout": 1.0}, "model.params.dropout", "[0, 1)"),
    ("mlp", {"dropout": float("nan")}, "model.params.dropout", "nan"),
    ("mlp", {"dropout": "0.1"}, "model.params.dropout", "'0.1'"),
    ("small_cnn", {"dropout_conv": -0.1}, "model.params.dropout_conv", "-0.1"),
    ("small_cnn", {"dropout_dense": 1}, "model.params.dropout_dense", "dropout_dense=1"),
    ("resnet20", {"weight_decay": -1}, "model.params.weight_decay", "weight_decay=-1"),
    ("resnet20", {"weight_decay": float("inf")}, "model.params.weight_decay", "inf"),
    ("resnet50", {"depth": 101}, "model.params.depth", "unknown parameter `depth`"),
])
def test_bad_parameters_are_refused_by_the_models_own_rules(
        name: str, params: dict, field: str, fragment: str) -> None:
    with pytest.raises(ModelError) as info:
        models.resolve_params(name, params)
    assert info.value.field == field and fragment in str(info.value)


def test_good_parameters_resolve_with_defaults() -> None:
    assert models.resolve_params("mlp", {"hidden": [], "activation": "silu"}) == {
        "hidden": [], "activation": "silu", "dropout": 0.0}
    assert models.resolve_params("resnet50", None) == {}


def test_the_parameter_cap_admits_the_largest_model_and_refuses_one_weight_more() -> None:
    shape, classes = (3,), 3
    n = models.count_params("mlp", {"hidden": [9, 9, 9]}, shape, classes)
    assert n == 36 + 180 + 30  # seed 004's count, as Keras reports it (test above)
    assert models.validate("mlp", {"hidden": [9, 9, 9]}, shape, classes, max_params=n) == {
        "hidden": [9, 9, 9], "activation": "relu", "dropout": 0.0}
    with pytest.raises(ModelError) as info:
        models.validate("mlp", {"hidden": [9, 9, 9]}, shape, classes, max_params=n - 1)
    assert info.value.field == "model.params.hidden"
    assert "246 parameters" in str(info.value) and "at most 245" in str(info.value)


def test_a_huge_mlp_is_counted_not_built() -> None:
    n = models.count_params("mlp", {"hidden": [65536] * 100}, (28, 28, 1), 10)
    assert n == 785 * 65536 + 99 * 65537 * 65536 + 65537 * 10
    with pytest.raises(ModelError, match="must have at most 50,000,000 parameters"):
        models.validate("mlp", {"hidden": [65536] * 100}, (28, 28, 1), 10,
                        max_params=50_000_000)


def test_checking_and_counting_never_import_tensorflow() -> None:
    code = """
import sys
from lrsearch import models
for name in models.names():
    models.validate(name, {}, (32, 32, 3), 10, max_params=10**9)
models.resolve_params("mlp", {"hidden": [8], "activation": "gelu", "dropout": 0.5})
print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


COUNTED = [
    ("mlp", {"hidden": []}, (3,), 2),
    ("mlp", {"hidden": [9, 9, 9], "dropout": 0.5}, (3,), 3),
    ("mlp", {"hidden": [7, 5], "activation": "tanh"}, (4, 5), 6),
    ("small_cnn", {}, (6, 6, 1), 2),
    ("small_cnn", {"dropout_conv": 0.0}, (9, 11, 3), 5),
    ("resnet20", {}, (8, 8, 1), 3),
    ("resnet20", {"weight_decay": 0.0}, (9, 8, 3), 10),
    ("resnet50", {}, (32, 32, 3), 2),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,params,shape,classes", COUNTED)
def test_the_pure_count_equals_keras_count_params(name: str, params: dict, shape: tuple,
                                                  classes: int) -> None:
    model = models.build(name, params, shape, classes)
    assert models.count_params(name, params, shape, classes) == model.count_params()


@pytest.mark.slow
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_accepted_activation_is_a_shape_keeping_keras_activation(activation: str) -> None:
    import keras

    x = keras.ops.convert_to_tensor([[-1.0, 0.5, 2.0]])
    assert tuple(keras.activations.get(activation)(x).shape) == (1, 3)
