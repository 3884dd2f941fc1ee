"""Multi-layer perceptron on the flattened input.

`check` and `count_params` are pure Python (the API refuses a bad or oversized model without
TensorFlow); `build` imports Keras."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lrsearch.errors import ModelError
from lrsearch.models.checks import require_fraction

if TYPE_CHECKING:
    import keras

    from lrsearch.models import Head

# Keras' element-wise activations (names `keras.activations.get` knows since Keras 3.0; a test
# builds the model with each). Not glu (it halves the layer) nor threshold (it needs arguments).
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "mish",
               "softplus", "softsign", "sigmoid", "hard_sigmoid", "hard_silu", "hard_swish",
               "tanh", "exponential", "linear", "softmax", "log_softmax")
MAX_LAYERS = 100
MAX_UNITS = 65536
SIZE_PARAM = "hidden"  # what an oversized mlp should change (named by the size check)


def check(*, hidden: Any, activation: Any, dropout: Any) -> None:
    """Types and ranges: `hidden` a list of at most MAX_LAYERS sizes in 1..MAX_UNITS,
    `activation` one of ACTIVATIONS, `dropout` in [0, 1)."""
    field = "model.params.hidden"
    if not isinstance(hidden, list | tuple):
        raise ModelError(f"mlp: argument `hidden` must be a list of layer sizes. Received: "
                         f"hidden={hidden!r}", field=field)
    if len(hidden) > MAX_LAYERS:  # the count, not the (long) list
        raise ModelError(f"mlp: argument `hidden` must have at most {MAX_LAYERS} layers. "
                         f"Received: {len(hidden)} layers", field=field)
    for units in hidden:
        if isinstance(units, bool) or not isinstance(units, int) or not 1 <= units <= MAX_UNITS:
            raise ModelError(f"mlp: argument `hidden` must hold layer sizes in 1..{MAX_UNITS}. "
                             f"Received: {units!r} in hidden", field=field)
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ModelError(f"mlp: argument `activation` must be one of {', '.join(ACTIVATIONS)}. "
                         f"Received: activation={activation!r}", field="model.params.activation")
    require_fraction("mlp", "dropout", dropout)


def count_params(input_shape: tuple[int, ...], head: Head, *, hidden: Any,
                 activation: Any, dropout: Any) -> int:
    """Weights and biases of each Dense layer, the head's included: sum of
    (inputs + 1) * units over the layers."""
    total, inputs = 0, math.prod(input_shape)
    for units in [*hidden, head.units]:
        total += (inputs + 1) * units
        inputs = units
    return total


def build(input_shape: tuple[int, ...], head: Head, *, hidden: Any, activation: str,
          dropout: float) -> keras.Model:
    import keras

    layers: list[Any] = [keras.Input(input_shape), keras.layers.Flatten()]
    for units in hidden:
        layers.append(keras.layers.Dense(units, activation=activation))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    # float32 whatever the policy: the softmax and the loss stay precise under mixed precision
    layers.append(keras.layers.Dense(head.units, activation=head.activation, dtype="float32"))
    return keras.Sequential(layers, name="mlp")
