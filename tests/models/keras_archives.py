"""Real `.keras` archives for the upload tests (each saved by Keras itself), the custom objects
they need (registered once, here), and ways to tamper with an archive."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

# What a worker whose plugins define the two objects below publishes.
CUSTOM_LAYER, CUSTOM_LOSS = "tkf>Scale", "tkf>tkf_loss"


@keras.saving.register_keras_serializable(package="tkf")
class Scale(keras.layers.Layer):
    """A custom layer: multiplies its input by `factor`."""

    def __init__(self, factor: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x: Any) -> Any:
        return x * self.factor

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="tkf")
def tkf_loss(y_true: Any, y_pred: Any) -> Any:
    """A custom loss (sparse categorical cross-entropy under another name)."""
    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)


def functional(path: Path, *, input_shape: tuple[int, ...] = (8, 8, 1), classes: int = 10,
               hidden: int = 0, custom_layer: bool = True) -> Path:
    """Flatten -> [Scale] -> [Dense(hidden)] -> Dense(classes, softmax), saved uncompiled."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    if custom_layer:
        x = Scale(0.5)(x)
    if hidden:
        x = keras.layers.Dense(hidden, activation="relu")(x)
    keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x)).save(path)
    return path


def sequential(path: Path, *, input_shape: tuple[int, ...] = (4,), units: int = 3) -> Path:
    keras.Sequential([keras.Input(input_shape), keras.layers.Dense(units)]).save(path)
    return path


def with_lambda(path: Path) -> Path:
    keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2, name="doubler"),
                      keras.layers.Dense(3)]).save(path)
    return path


def compiled_custom_loss(path: Path) -> Path:
    """The custom layer, compiled with the custom loss, accuracy and an AUC."""
    inputs = keras.Input((8, 8, 1))
    x = Scale()(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    model.compile("adam", loss=tkf_loss, metrics=["accuracy", keras.metrics.AUC(name="auc")])
    model.save(path)
    return path


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def config_of(path: Path) -> dict[str, Any]:
    return json.loads(members(path)["config.json"])


def zip_bytes(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buffer.getvalue()


def rewritten(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None] | None = None,
              extra: dict[str, bytes] | None = None) -> Path:
    """`src` with its config.json changed in place by `edit` and `extra` members added."""
    entries = members(src)
    if edit is not None:
        config = json.loads(entries["config.json"])
        edit(config)
        entries["config.json"] = json.dumps(config).encode()
    dst.write_bytes(zip_bytes({**entries, **(extra or {})}))
    return dst


def layer(config: dict[str, Any], class_name: str) -> dict[str, Any]:
    """The first serialized layer of `class_name` in a model config."""
    return next(item for item in config["config"]["layers"] if item["class_name"] == class_name)
