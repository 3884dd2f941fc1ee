"""keras.applications.ResNet50 from scratch (weights=None: nothing is downloaded)."""

from __future__ import annotations

import keras


def build(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    return keras.applications.ResNet50(weights=None, input_shape=input_shape,
                                       classes=num_classes)
