"""keras.applications.ResNet50 from scratch (weights=None: nothing is downloaded)."""

from __future__ import annotations

import keras

from lrsearch.models import require_image


def build(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    require_image("resnet50", input_shape, min_side=32, channels=3)
    return keras.applications.ResNet50(weights=None, input_shape=input_shape,
                                       classes=num_classes)
