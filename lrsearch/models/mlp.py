"""Multi-layer perceptron on the flattened input."""

from __future__ import annotations

from typing import Any

import keras

from lrsearch.errors import ModelError

ACTIVATIONS = ("relu", "tanh", "elu", "gelu")


def build(input_shape: tuple[int, ...], num_classes: int, *, hidden: Any, activation: str,
          dropout: float) -> keras.Model:
    if not isinstance(hidden, list | tuple) or not all(
            isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= 65536 for h in hidden):
        raise ModelError(f"mlp: argument `hidden` must be a list of layer sizes in 1..65536. "
                         f"Received: hidden={hidden!r}", field="model.params.hidden")
    if activation not in ACTIVATIONS:
        raise ModelError(f"mlp: argument `activation` must be one of {', '.join(ACTIVATIONS)}. "
                         f"Received: activation={activation!r}", field="model.params.activation")
    if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ModelError(f"mlp: argument `dropout` must be in [0, 1). Received: "
                         f"dropout={dropout!r}", field="model.params.dropout")
    layers: list[keras.layers.Layer] = [keras.Input(input_shape), keras.layers.Flatten()]
    for units in hidden:
        layers.append(keras.layers.Dense(units, activation=activation))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(num_classes, activation="softmax"))
    return keras.Sequential(layers, name="mlp")
