"""Seed 000's small CNN, layer for layer (25,546 parameters on 32x32x3 with 2 classes)."""

from __future__ import annotations

import keras

from lrsearch.errors import ModelError


def build(input_shape: tuple[int, ...], num_classes: int, *, dropout_conv: float,
          dropout_dense: float) -> keras.Model:
    for name, value in (("dropout_conv", dropout_conv), ("dropout_dense", dropout_dense)):
        if not isinstance(value, int | float) or not 0 <= value < 1:
            raise ModelError(f"small_cnn: argument `{name}` must be in [0, 1). Received: "
                             f"{name}={value!r}", field=f"model.params.{name}")
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Dropout(dropout_conv),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(dropout_dense),
        keras.layers.Dense(num_classes, activation="softmax"),
    ], name="small_cnn")
