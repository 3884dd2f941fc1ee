"""Models by name, shaped from the dataset (input shape, number of classes).

The registry is plain data (the API lists it without TensorFlow). Each architecture's module
holds its rules beside its builder: `check(**params)` (types and ranges) and
`count_params(input_shape, num_classes, **params)` are pure Python, so `validate()` refuses a
bad or oversized model at submission without TensorFlow; only `build()` imports Keras.
Every model ends in a softmax over the classes.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from lrsearch.errors import ModelError
from lrsearch.models.mlp import ACTIVATIONS


@dataclass(frozen=True)
class ModelParam:
    name: str
    default: Any
    description: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    module: str  # lrsearch.models.<module> defines build(input_shape, num_classes, **params)
    params: tuple[ModelParam, ...] = ()
    min_side: int | None = None  # image models: smallest height/width they accept
    channels: int | None = None  # image models that need a fixed channel count

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "parameters": [{"name": p.name, "default": p.default,
                                "description": p.description} for p in self.params]}


SPECS: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("mlp", "Dense layers on the flattened input (seed 004 uses hidden=[9, 9, 9]).",
              "mlp", (ModelParam("hidden", [64], "Units of each hidden layer."),
                      ModelParam("activation", "relu", "A Keras activation: "
                                 f"{', '.join(ACTIVATIONS)}."),
                      ModelParam("dropout", 0.0, "Dropout after each hidden layer, in [0, 1)."))),
    ModelSpec("small_cnn", "Seed 000's network: Conv(4)-Conv(8)-MaxPool-Dropout-Dense(16)-"
              "Dropout-Dense; 25,546 parameters on 32x32x3 with 2 classes.", "small_cnn",
              (ModelParam("dropout_conv", 0.25, "Dropout after the pooling layer."),
               ModelParam("dropout_dense", 0.5, "Dropout after the hidden dense layer.")),
              min_side=6),
    ModelSpec("resnet20", "The CIFAR ResNet-20 of He et al. (2016): 3 stages of 3 basic blocks, "
              "16/32/64 filters, batch norm (about 0.27 M parameters).", "resnet",
              (ModelParam("weight_decay", 1e-4, "L2 penalty on the convolution kernels."),),
              min_side=8),
    ModelSpec("resnet50", "keras.applications.ResNet50 with weights=None (seed 001); inputs of "
              "at least 32x32 with 3 channels.", "resnet50", min_side=32, channels=3),
)}


def names() -> list[str]:
    return list(SPECS)


def spec(name: str) -> ModelSpec:
    if name not in SPECS:
        raise ModelError(f"Unknown model `{name}`. Known models: {', '.join(SPECS)}",
                         field="model")
    return SPECS[name]


def _module(name: str) -> ModuleType:
    """The architecture's module (pure at import: Keras is imported inside `build`)."""
    return importlib.import_module(f"lrsearch.models.{spec(name).module}")


def resolve_params(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults filled in, then checked by the architecture's own rules; unknown parameters
    and bad values raise ModelError naming `model.params.<name>`."""
    s = spec(name)
    known = {p.name: p.default for p in s.params}
    if params is not None and not isinstance(params, Mapping):
        raise ModelError(f"{name}: `params` must be an object. Received: params={params!r}",
                         field="model.params")
    for key in params or {}:
        if key not in known:
            raise ModelError(f"{name}: unknown parameter `{key}`. Known parameters: "
                             f"{', '.join(known) or 'none'}", field=f"model.params.{key}")
    resolved = {**known, **dict(params or {})}
    _module(name).check(**resolved)
    return resolved


def count_params(name: str, params: Mapping[str, Any] | None, input_shape: tuple[int, ...],
                 num_classes: int) -> int:
    """What keras.Model.count_params() of the built model returns (trainable and not),
    computed in pure Python from the architecture. Checks the parameters and the input."""
    resolved = resolve_params(name, params)
    check_input(name, tuple(input_shape))
    return int(_module(name).count_params(tuple(input_shape), num_classes, **resolved))


def validate(name: str, params: Mapping[str, Any] | None, input_shape: tuple[int, ...],
             num_classes: int, *, max_params: int) -> dict[str, Any]:
    """Everything known about a model before it is built: the parameters (resolved, which is
    returned), the input it needs, and its size: more than `max_params` weights raises."""
    resolved = resolve_params(name, params)
    n = count_params(name, resolved, input_shape, num_classes)
    if n > max_params:
        size_param = getattr(_module(name), "SIZE_PARAM", None)
        raise ModelError(f"Model `{name}` must have at most {max_params:,} parameters (the "
                         f"server's max_model_params). Received: {n:,} parameters for input "
                         f"shape {tuple(input_shape)} and {num_classes} classes",
                         field=f"model.params.{size_param}" if size_param else "model")
    return resolved


def check_input(name: str, input_shape: tuple[int, ...]) -> None:
    """Image models need (height, width, channels) inputs of a minimum size (pure: the API
    checks a study's model against its dataset before anything is stored)."""
    s = spec(name)
    if s.min_side is None:
        return
    ok = len(input_shape) == 3 and min(input_shape[:2]) >= s.min_side
    if ok and s.channels is not None:
        ok = input_shape[2] == s.channels
    if not ok:
        side = f"{s.min_side}x{s.min_side}"
        need = f"(height, width, {s.channels or 'channels'}) images of at least {side}"
        raise ModelError(f"Model `{name}` needs {need}. Received input shape "
                         f"{tuple(input_shape)}", field="model")


def build(name: str, params: Mapping[str, Any] | None, input_shape: tuple[int, ...],
          num_classes: int) -> Any:
    """A fresh, uncompiled keras.Model for the dataset's shape."""
    s = spec(name)
    resolved = resolve_params(name, params)
    if num_classes < 2 or math.prod(input_shape) < 1:
        raise ModelError(f"Model `{name}` needs >= 2 classes and a non-empty input. Received "
                         f"num_classes={num_classes}, input_shape={input_shape}", field="model")
    check_input(name, tuple(input_shape))
    return _module(s.name).build(tuple(input_shape), num_classes, **resolved)
