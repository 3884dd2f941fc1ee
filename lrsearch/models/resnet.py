"""The CIFAR ResNet-20 (He et al. 2016, section 4.2): a 3x3 conv with 16 filters, then 3 stages
of 3 basic blocks with 16, 32 and 64 filters (stride 2 at the start of stages 2 and 3, 1x1
projection shortcuts there), global average pooling and the dataset's head (a softmax over
the classes, or a linear layer for float targets).

`check` and `count_params` are pure Python; `build` imports Keras."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lrsearch.models.checks import require_non_negative

if TYPE_CHECKING:
    import keras

    from lrsearch.models import Head

STAGES = (16, 32, 64)  # filters per stage
BLOCKS = 3  # basic blocks per stage


def check(*, weight_decay: Any) -> None:
    """weight_decay: a finite number >= 0."""
    require_non_negative("resnet20", "weight_decay", weight_decay)


def _plan() -> list[tuple[int, int, int]]:
    """(filters in, filters out, stride) of every basic block, in order."""
    plan, inputs = [], STAGES[0]
    for stage, filters in enumerate(STAGES):
        for block in range(BLOCKS):
            plan.append((inputs, filters, 2 if stage > 0 and block == 0 else 1))
            inputs = filters
    return plan


def count_params(input_shape: tuple[int, ...], head: Head, **_: Any) -> int:
    """Bias-free 3x3 convolutions, batch norms (4 weights per channel: scale, offset, moving
    mean and variance), 1x1 projections where a block changes shape, the head's Dense layer. The
    image size does not matter; the channels do."""
    bn = 4
    total = 9 * input_shape[-1] * STAGES[0] + bn * STAGES[0]
    for inputs, filters, stride in _plan():
        total += 9 * inputs * filters + 9 * filters * filters + 2 * bn * filters
        if stride != 1 or inputs != filters:
            total += inputs * filters + bn * filters
    return total + (STAGES[-1] + 1) * head.units


def build(input_shape: tuple[int, ...], head: Head, *, weight_decay: float) -> keras.Model:
    import keras
    from keras import layers

    def conv(filters: int, stride: int) -> Any:
        return layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                             kernel_initializer="he_normal",
                             kernel_regularizer=(keras.regularizers.L2(weight_decay)
                                                 if weight_decay else None))

    def block(x: Any, filters: int, stride: int) -> Any:
        y = layers.ReLU()(layers.BatchNormalization()(conv(filters, stride)(x)))
        y = layers.BatchNormalization()(conv(filters, 1)(y))
        if stride != 1 or x.shape[-1] != filters:
            x = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
            x = layers.BatchNormalization()(x)
        return layers.ReLU()(layers.Add()([x, y]))

    inputs = keras.Input(input_shape)
    x = layers.ReLU()(layers.BatchNormalization()(conv(STAGES[0], 1)(inputs)))
    for _, filters, stride in _plan():
        x = block(x, filters, stride)
    x = layers.GlobalAveragePooling2D()(x)
    # float32 whatever the policy: the softmax and the loss stay precise under mixed precision
    outputs = layers.Dense(head.units, activation=head.activation, dtype="float32")(x)
    return keras.Model(inputs, outputs, name="resnet20")
