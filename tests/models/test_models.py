"""Model registry: shapes from the dataset (input shape and head), seed 000's parameter count,
clear errors; each model's pure checks and parameter count (equal to Keras' count_params) for
both heads: a softmax over classes and a linear layer for float targets."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lrsearch import models
from lrsearch.errors import ModelError
from lrsearch.models import MAX_TARGETS, Head
from lrsearch.models.mlp import ACTIVATIONS


def test_small_cnn_has_seed_000_parameter_count() -> None:
    model = models.build("small_cnn", {}, (32, 32, 3), Head.classes(2))
    assert model.count_params() == 25_546
    assert [layer.__class__.__name__ for layer in model.layers] == [
        "Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense"]


def test_mlp_seed_004_shape() -> None:
    model = models.build("mlp", {"hidden": [9, 9, 9]}, (3,), Head.classes(3))
    # 3*9+9 + 2*(9*9+9) + 9*3+3
    assert model.count_params() == 36 + 180 + 30
    assert model.output_shape == (None, 3)


def test_resnet20_is_the_cifar_resnet() -> None:
    model = models.build("resnet20", {}, (32, 32, 3), Head.classes(10))
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len([c for c in convs if c.kernel_size == (3, 3)]) == 19  # + the dense layer = 20
    assert 260_000 < model.count_params() < 280_000
    assert model.output_shape == (None, 10)


def test_resnet50_from_keras_applications_without_weights() -> None:
    model = models.build("resnet50", {}, (32, 32, 3), Head.classes(2))
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
        models.build(name, params, shape, Head.classes(3))
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
    shape, classes = (3,), Head.classes(3)
    n = models.count_params("mlp", {"hidden": [9, 9, 9]}, shape, classes)
    assert n == 36 + 180 + 30  # seed 004's count, as Keras reports it (test above)
    assert models.validate("mlp", {"hidden": [9, 9, 9]}, shape, classes, max_params=n) == {
        "hidden": [9, 9, 9], "activation": "relu", "dropout": 0.0}
    with pytest.raises(ModelError) as info:
        models.validate("mlp", {"hidden": [9, 9, 9]}, shape, classes, max_params=n - 1)
    assert info.value.field == "model.params.hidden"
    assert "246 parameters" in str(info.value) and "at most 245" in str(info.value)


def test_a_huge_mlp_is_counted_not_built() -> None:
    n = models.count_params("mlp", {"hidden": [65536] * 100}, (28, 28, 1), Head.classes(10))
    assert n == 785 * 65536 + 99 * 65537 * 65536 + 65537 * 10
    with pytest.raises(ModelError, match="must have at most 50,000,000 parameters"):
        models.validate("mlp", {"hidden": [65536] * 100}, (28, 28, 1), Head.classes(10),
                        max_params=50_000_000)
    with pytest.raises(ModelError, match=r"float targets of shape \(4,\) per sample"):
        models.validate("mlp", {"hidden": [65536] * 100}, (28, 28, 1), Head.targets((4,)),
                        max_params=50_000_000)


def test_checking_and_counting_never_import_tensorflow() -> None:
    code = """
import sys
from lrsearch import models
for name in models.names():
    for head in (models.Head.classes(10), models.Head.targets((2,))):
        models.validate(name, {}, (32, 32, 3), head, max_params=10**9)
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
# Each entry with a softmax over `n` classes, n float targets a sample, and one target.
HEADS = {"classes": Head.classes, "targets": lambda n: Head.targets((n,)),
         "one_target": lambda n: Head.targets(())}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(HEADS))
@pytest.mark.parametrize("name,params,shape,n", COUNTED)
def test_the_pure_count_equals_keras_count_params(name: str, params: dict, shape: tuple,
                                                  n: int, kind: str) -> None:
    head = HEADS[kind](n)
    model = models.build(name, params, shape, head)
    assert models.count_params(name, params, shape, head) == model.count_params()
    assert model.output_shape == (None, head.units)
    assert model.layers[-1].get_config()["activation"] == head.activation


@pytest.mark.slow
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_accepted_activation_is_a_shape_keeping_keras_activation(activation: str) -> None:
    import keras

    x = keras.ops.convert_to_tensor([[-1.0, 0.5, 2.0]])
    assert tuple(keras.activations.get(activation)(x).shape) == (1, 3)


def test_heads_say_what_the_last_layer_and_its_loss_are() -> None:
    classes, one, three = Head.classes(10), Head.targets(()), Head.targets([3])
    assert (classes.kind, classes.units, classes.target_shape) == ("classes", 10, ())
    assert (classes.activation, classes.loss, classes.metrics) == (
        "softmax", "sparse_categorical_crossentropy", ("accuracy",))
    assert (one.units, one.target_shape, three.units, three.target_shape) == (1, (), 3, (3,))
    assert (three.activation, three.loss, three.metrics) == ("linear", "mse", ("mae",))
    assert three.as_dict() == {"task": "targets", "num_classes": None, "target_shape": [3]}
    assert classes.as_dict() == {"task": "classes", "num_classes": 10, "target_shape": []}
    for head in (classes, one, three, Head.targets((2, 2))):
        assert Head.from_dict(head.as_dict()) == head
    assert Head("targets", 3, [3]) == three


@pytest.mark.parametrize("make,field,fragment", [
    (lambda: Head.classes(1), "num_classes", "num_classes=1"),
    (lambda: Head.classes(True), "num_classes", "num_classes=True"),
    (lambda: Head.targets((0,)), "target_shape", "target_shape=(0,)"),
    (lambda: Head.targets(3), "target_shape", "target_shape=3"),
    (lambda: Head.targets((MAX_TARGETS + 1,)), "target_shape", f"at most {MAX_TARGETS}"),
    (lambda: Head("classes", 3, (3,)), "head", "disagree"),
    (lambda: Head("targets", 2, (3,)), "head", "disagree"),
    (lambda: Head("regression", 1, ()), "task", "task='regression'"),
    (lambda: Head.from_dict({"task": "classes", "num_classes": None}), "num_classes", "None"),
    (lambda: Head.from_dict({"num_classes": 3}), "task", "task"),
])
def test_bad_heads_are_refused_naming_the_field(make, field: str, fragment: str) -> None:
    with pytest.raises(ModelError) as info:
        make()
    assert info.value.field == field and fragment in str(info.value)


def test_built_in_models_refuse_targets_of_more_than_one_dimension() -> None:
    for call in (models.build, models.count_params):
        with pytest.raises(ModelError, match=r"targets of shape \(2, 2\) per sample"):
            call("mlp", {}, (3,), Head.targets((2, 2)))
    with pytest.raises(ModelError, match=r"needs a lrsearch\.models\.Head"):
        models.count_params("mlp", {}, (3,), 10)


@pytest.mark.slow
def test_mlp_regresses_float_targets_with_a_linear_head_and_mse() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((100, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 3.0], np.float32) + 10.0)  # shape (100,): one target each
    head = Head.targets(())
    model = models.build("mlp", {"hidden": [8]}, (3,), head)
    assert model.output_shape == (None, 1) and model.layers[-1].activation.__name__ == "linear"
    model.compile(optimizer="adam", loss=head.loss, metrics=list(head.metrics))
    history = model.fit(x, y, validation_data=(x[:20], y[:20]), epochs=1, batch_size=32,
                        verbose=0).history
    assert sorted(history) == ["loss", "mae", "val_loss", "val_mae"]
    predictions = model.predict(x[:20], verbose=0)[:, 0]
    # The loss is the mean squared error per sample (no (n,) against (n, 1) broadcasting),
    # and outputs are unbounded (a softmax of one unit would be 1 everywhere).
    assert model.evaluate(x[:20], y[:20], verbose=0)[0] == pytest.approx(
        float(np.mean((predictions - y[:20]) ** 2)), rel=1e-4)
    assert len(set(np.round(predictions, 5).tolist())) > 1
