"""Models by name, shaped from the dataset: its input shape and its `Head`.

A `Head` is the output a dataset needs: a softmax over `num_classes` for class ids, or a
linear layer with one unit per target for float targets (regression), each with its default
loss and metrics. The registry is plain data (the API lists it without TensorFlow). Each
architecture's module holds its rules beside its builder: `check(**params)` (types and
ranges) and `count_params(input_shape, head, **params)` are pure Python, so `validate()`
refuses a bad or oversized model at submission without TensorFlow; only `build()` imports
Keras. Every built-in model ends in Dense(head.units, activation=head.activation), computed in
float32 under any dtype policy.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from lrsearch.errors import ModelError
from lrsearch.models.mlp import ACTIVATIONS
from lrsearch.registry import Registry

Task = Literal["classes", "targets"]
TASKS: tuple[Task, ...] = ("classes", "targets")
MAX_TARGETS = 65536  # values per sample a target may hold (the width of a linear head)


def _check_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(f"Argument `num_classes` must be an integer >= 2. Received: "
                         f"num_classes={num_classes!r}", field="num_classes")
    return num_classes


def _target_shape(shape: Any) -> tuple[int, ...]:
    """`shape` as a tuple of sizes >= 1 holding at most MAX_TARGETS values, or ModelError."""
    if not isinstance(shape, tuple | list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ModelError(f"Argument `target_shape` must be a list of sizes >= 1. Received: "
                         f"target_shape={shape!r}", field="target_shape")
    if math.prod(shape) > MAX_TARGETS:
        raise ModelError(f"Argument `target_shape` must hold at most {MAX_TARGETS} values per "
                         f"sample. Received: target_shape={tuple(shape)} "
                         f"({math.prod(shape)} values)", field="target_shape")
    return tuple(shape)


@dataclass(frozen=True)
class Head:
    """The output a dataset needs: `units` outputs with `activation`, trained by `loss`.

    kind "classes": a softmax over `units` >= 2 class ids, `target_shape` (). kind "targets":
    float targets of `target_shape` per sample (() for one value a sample), a linear layer of
    `units` = prod(target_shape) outputs. Build one with `Head.classes(n)` or
    `Head.targets(shape)`; `as_dict()` is what the API shows and what rows store."""

    kind: Task
    units: int  # num_classes, or the number of target values (1 for shape (n,))
    target_shape: tuple[int, ...]  # () for class ids; the per-sample shape of the targets

    def __post_init__(self) -> None:
        if self.kind == "classes":
            _check_classes(self.units)
            consistent = self.target_shape == ()
        elif self.kind == "targets":
            object.__setattr__(self, "target_shape", _target_shape(self.target_shape))
            consistent = self.units == math.prod(self.target_shape)
        else:
            raise ModelError(f"Argument `task` must be one of {', '.join(TASKS)}. Received: "
                             f"task={self.kind!r}", field="task")
        if not consistent:
            raise ModelError(f"A `{self.kind}` head has units {self.units} and target shape "
                             f"{self.target_shape}, which disagree", field="head")

    @classmethod
    def classes(cls, num_classes: int) -> Head:
        """A softmax over `num_classes` (an integer >= 2) class ids."""
        return cls("classes", _check_classes(num_classes), ())

    @classmethod
    def targets(cls, shape: tuple[int, ...] | list[int]) -> Head:
        """Float targets of `shape` per sample (() for one value a sample): a linear layer of
        prod(shape) units, at most MAX_TARGETS."""
        dims = _target_shape(shape)
        return cls("targets", math.prod(dims), dims)

    @property
    def activation(self) -> str:
        """The last layer's activation: softmax over classes, linear for targets."""
        return "softmax" if self.kind == "classes" else "linear"

    @property
    def loss(self) -> str:
        """The default loss (a Keras name)."""
        return "sparse_categorical_crossentropy" if self.kind == "classes" else "mse"

    @property
    def metrics(self) -> tuple[str, ...]:
        """The default metrics (Keras names)."""
        return ("accuracy",) if self.kind == "classes" else ("mae",)

    @property
    def num_classes(self) -> int | None:
        return self.units if self.kind == "classes" else None

    def describe(self) -> str:
        """In words, for messages: "10 classes", "float targets of shape (3,) per sample"."""
        if self.kind == "classes":
            return f"{self.units} classes"
        return f"float targets of shape {self.target_shape} per sample"

    def as_dict(self) -> dict[str, Any]:
        """{"task", "num_classes" (None for targets), "target_shape" (a list)}: plain JSON."""
        return {"task": self.kind, "num_classes": self.num_classes,
                "target_shape": list(self.target_shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Head:
        """The head `as_dict` described (raises ModelError on anything else)."""
        if not isinstance(data, Mapping) or data.get("task") not in TASKS:
            raise ModelError(f"A head needs `task` in {', '.join(TASKS)}. Received: {data!r}",
                             field="task")
        if data["task"] == "classes":
            return cls.classes(data.get("num_classes"))  # type: ignore[arg-type]
        return cls.targets(data.get("target_shape"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ModelParam:
    name: str
    default: Any
    description: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    module: str  # lrsearch.models.<module> defines build(input_shape, head, **params)
    params: tuple[ModelParam, ...] = ()
    min_side: int | None = None  # image models: smallest height/width they accept
    channels: int | None = None  # image models that need a fixed channel count

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "parameters": [{"name": p.name, "default": p.default,
                                "description": p.description} for p in self.params]}


ARCHITECTURES: Registry[ModelSpec] = Registry("model", error=ModelError, field="model")
for _spec in (
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
):
    ARCHITECTURES.add(_spec.name, _spec)


def names() -> list[str]:
    return ARCHITECTURES.names()


def spec(name: str) -> ModelSpec:
    """A built-in architecture; an unknown name raises ModelError listing the known ones."""
    return ARCHITECTURES.get(name)


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
                 head: Head) -> int:
    """What keras.Model.count_params() of the built model returns (trainable and not),
    computed in pure Python from the architecture. Checks the parameters, the input and
    the head."""
    resolved = resolve_params(name, params)
    check_input(name, tuple(input_shape))
    check_head(name, head)
    return int(_module(name).count_params(tuple(input_shape), head, **resolved))


def validate(name: str, params: Mapping[str, Any] | None, input_shape: tuple[int, ...],
             head: Head, *, max_params: int) -> dict[str, Any]:
    """Everything known about a model before it is built: the parameters (resolved, which is
    returned), the input and head it needs, and its size: more than `max_params` weights
    raises."""
    resolved = resolve_params(name, params)
    n = count_params(name, resolved, input_shape, head)
    if n > max_params:
        size_param = getattr(_module(name), "SIZE_PARAM", None)
        raise ModelError(f"Model `{name}` must have at most {max_params:,} parameters (the "
                         f"server's max_model_params). Received: {n:,} parameters for input "
                         f"shape {tuple(input_shape)} and {head.describe()}",
                         field=f"model.params.{size_param}" if size_param else "model")
    return resolved


def check_head(name: str, head: Head) -> None:
    """Built-in models end in one Dense layer: they output class probabilities or a vector
    of targets per sample, not targets of more than one dimension."""
    if not isinstance(head, Head):
        raise ModelError(f"Model `{name}` needs a lrsearch.models.Head for its output. "
                         f"Received: head={head!r}", field="head")
    if len(head.target_shape) > 1:
        raise ModelError(f"Built-in model `{name}` outputs one vector per sample; it cannot "
                         f"output targets of shape {head.target_shape} per sample. Flatten "
                         "the targets to (samples, values)", field="model")


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
          head: Head) -> Any:
    """A fresh, uncompiled keras.Model for the dataset's input shape, ending in
    Dense(head.units, activation=head.activation)."""
    s = spec(name)
    resolved = resolve_params(name, params)
    if math.prod(input_shape) < 1:
        raise ModelError(f"Model `{name}` needs a non-empty input. Received "
                         f"input_shape={input_shape}", field="model")
    check_input(name, tuple(input_shape))
    check_head(name, head)
    return _module(s.name).build(tuple(input_shape), head, **resolved)
