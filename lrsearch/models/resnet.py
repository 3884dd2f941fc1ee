"""The CIFAR ResNet-20 (He et al. 2016, section 4.2): a 3x3 conv with 16 filters, then 3 stages
of 3 basic blocks with 16, 32 and 64 filters (stride 2 at the start of stages 2 and 3, 1x1
projection shortcuts there), global average pooling and a softmax."""

from __future__ import annotations

import keras
from keras import layers

from lrsearch.errors import ModelError


def _conv(filters: int, stride: int, l2: float) -> layers.Conv2D:
    return layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                         kernel_initializer="he_normal",
                         kernel_regularizer=keras.regularizers.L2(l2) if l2 else None)


def _block(x: keras.KerasTensor, filters: int, stride: int, l2: float) -> keras.KerasTensor:
    y = layers.ReLU()(layers.BatchNormalization()(_conv(filters, stride, l2)(x)))
    y = layers.BatchNormalization()(_conv(filters, 1, l2)(y))
    if stride != 1 or x.shape[-1] != filters:
        x = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
    return layers.ReLU()(layers.Add()([x, y]))


def build(input_shape: tuple[int, ...], num_classes: int, *, weight_decay: float) -> keras.Model:
    if not isinstance(weight_decay, int | float) or weight_decay < 0:
        raise ModelError(f"resnet20: argument `weight_decay` must be >= 0. Received: "
                         f"weight_decay={weight_decay!r}", field="model.params.weight_decay")
    inputs = keras.Input(input_shape)
    x = layers.ReLU()(layers.BatchNormalization()(_conv(16, 1, weight_decay)(inputs)))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            x = _block(x, filters, 2 if stage > 0 and block == 0 else 1, weight_decay)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet20")
