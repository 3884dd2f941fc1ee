"""Seed 000's small CNN, layer for layer (25,546 parameters on 32x32x3 with 2 classes), ending
in the dataset's head (a softmax over the classes, or a linear layer for float targets).

`check` and `count_params` are pure Python; `build` imports Keras."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lrsearch.models.checks import require_fraction

if TYPE_CHECKING:
    import keras

    from lrsearch.models import Head


def check(*, dropout_conv: Any, dropout_dense: Any) -> None:
    """Both dropout rates in [0, 1)."""
    require_fraction("small_cnn", "dropout_conv", dropout_conv)
    require_fraction("small_cnn", "dropout_dense", dropout_dense)


def count_params(input_shape: tuple[int, ...], head: Head, **_: Any) -> int:
    """Two valid 3x3 convolutions (4 then 8 filters) shrink each side by 4, the 2x2 pooling
    halves it (rounding down); then Dense(16) and the head's Dense layer."""
    height, width, channels = input_shape
    flat = ((height - 4) // 2) * ((width - 4) // 2) * 8
    return ((9 * channels + 1) * 4 + (9 * 4 + 1) * 8 + (flat + 1) * 16
            + (16 + 1) * head.units)


def build(input_shape: tuple[int, ...], head: Head, *, dropout_conv: float,
          dropout_dense: float) -> keras.Model:
    import keras

    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Dropout(dropout_conv),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(dropout_dense),
        keras.layers.Dense(head.units, activation=head.activation,
                           dtype="float32"),  # precise softmax and loss under mixed precision
    ], name="small_cnn")
