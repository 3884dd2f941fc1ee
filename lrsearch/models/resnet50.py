"""keras.applications.ResNet50 from scratch (weights=None: nothing is downloaded), its top
layer sized and activated by the dataset's head.

`check` and `count_params` are pure Python; `build` imports Keras."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

    from lrsearch.models import Head

# (bottleneck filters, blocks) of the four stacks; each block ends with 4x the filters.
STACKS = ((64, 3), (128, 4), (256, 6), (512, 3))


def check() -> None:
    """ResNet50 takes no parameters."""


def count_params(input_shape: tuple[int, ...], head: Head, **_: Any) -> int:
    """Keras' ResNet50: a 7x7 stem convolution (64 filters, with bias) and its batch norm,
    then bottleneck blocks 1x1 -> 3x3 -> 1x1 (every convolution with a bias, each followed by
    a batch norm of 4 weights per channel) with a 1x1 projection in each stack's first block,
    then the head's Dense layer on 2048 features."""
    def conv_bn(k: int, inputs: int, filters: int) -> int:
        return k * k * inputs * filters + filters + 4 * filters

    total = conv_bn(7, input_shape[-1], 64)
    inputs = 64
    for filters, blocks in STACKS:
        for block in range(blocks):
            if block == 0:
                total += conv_bn(1, inputs, 4 * filters)
            total += (conv_bn(1, inputs, filters) + conv_bn(3, filters, filters)
                      + conv_bn(1, filters, 4 * filters))
            inputs = 4 * filters
    return total + (inputs + 1) * head.units


def build(input_shape: tuple[int, ...], head: Head) -> keras.Model:
    import keras

    return keras.applications.ResNet50(weights=None, input_shape=input_shape,
                                       classes=head.units, classifier_activation=head.activation)
