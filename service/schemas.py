"""Shared request/response building blocks."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator


def check_finite(value: Any, where: str = "body") -> None:
    """Reject NaN, infinities and NUL characters anywhere in a JSON value (even in free-form
    parameter objects, which pydantic's own checks do not reach)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: numbers must be finite. Received: {value}")
    if isinstance(value, str) and "\x00" in value:
        raise ValueError(f"{where}: text must not contain NUL characters")
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(key, f"{where}.{key}")
            check_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite(item, f"{where}[{i}]")


class Strict(BaseModel):
    """Request bodies: unknown fields, non-finite numbers and NUL characters are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _finite(cls, data: Any) -> Any:
        check_finite(data, "body")
        return data


class Named(Strict):
    """A registry entry by name with its parameters: {"name": "mlp", "params": {...}}."""

    name: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)


class UploadIn(Strict):
    """An uploaded model by name (POST /v1/models). `init`: "uploaded" starts every trial
    from its saved weights (fine-tuning); "fresh" re-initialises them."""

    upload: str = Field(max_length=64)
    init: Literal["uploaded", "fresh"] = "uploaded"


ModelIn = Named | UploadIn


class ObjectiveIn(Strict):
    """Any metric the compiled model logs, by Keras' name ("val_auc"); `direction` may be
    left out only for the names in README's table (e.g. *loss, *accuracy, mae, auc)."""

    metric: str = Field(max_length=128)
    direction: Literal["maximize", "minimize"] | None = None


class Training(Strict):
    """What every request that trains shares: model, optimizer, loss and metrics."""

    model: ModelIn = Field(default_factory=lambda: Named(name="mlp"))
    optimizer: Named = Field(default_factory=lambda: Named(name="sgd"))
    loss: str | None = Field(default=None, max_length=128, description=(
        "A Keras loss identifier (or a plugin's, `package>name`). Default: an uploaded "
        "model's own when it was saved compiled, else the dataset's (sparse categorical "
        "cross-entropy for class ids, mse for float targets)"))
    metrics: list[str] | None = Field(default=None, max_length=16, description=(
        "Keras metric identifiers to log. Default: as for `loss` (accuracy, or mae)"))
    mixed_precision: StrictBool = Field(default=False, description=(
        "Train under Keras' mixed precision: mixed_float16 with loss scaling on a GPU, "
        "mixed_bfloat16 on a worker without one. Each trial records the policy it ran"))
    jit_compile: StrictBool | Literal["auto"] = Field(default="auto", description=(
        "XLA compilation (Keras' `jit_compile`): true, false, or auto for Keras' choice (on "
        "with JAX, on TensorFlow only on a GPU, off with PyTorch). Each trial records "
        "whether it ran compiled"))


class ProvenanceOut(BaseModel):
    """What a trial or range test trained on (lrsearch.runtime), as its worker's child
    reported it once the model was compiled."""

    backend: str = Field(description="Keras' backend: tensorflow, jax or torch")
    backend_version: str
    keras_version: str
    device: str = Field(description="cpu or gpu")
    device_name: str = Field(description="the GPU's model, or the CPU's name")
    precision_policy: str = Field(description="the Keras dtype policy it trained under: "
                                  "float32, mixed_float16 or mixed_bfloat16 (mixed precision "
                                  "without a GPU)")
    mixed_precision_requested: bool
    jit_compile_requested: bool | Literal["auto"]
    xla: bool | None = Field(description="whether Keras compiled the step with XLA "
                             "(`jit_compile` as Keras resolved it)")

    compiler: str | None = Field(default=None, description="what compiled the train step: "
                                 "xla (TensorFlow, JAX), torch.compile (PyTorch's "
                                 "jit_compile), or null")
    layer_policies: list[str] | None = Field(default=None, description="the dtype policies "
                                             "of the model's layers (an uploaded model keeps "
                                             "the ones it was saved with)")

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> ProvenanceOut | None:
        """The stored record, or None (a record this version cannot read, written by a
        worker of another version, is left out rather than failing the whole list)."""
        if not stored:
            return None
        try:
            return cls.model_validate(stored)
        except ValidationError:
            return None


class Page(BaseModel):
    items: list[Any]
    total: int
    offset: int
    limit: int


def finite_or_none(value: float | None) -> float | None:
    """Stored metrics may be NaN from a diverged run; JSON responses never carry NaN."""
    return value if value is not None and math.isfinite(value) else None


class ErrorOut(BaseModel):
    """Every error response: what kind, a sentence naming the field or value, the field."""

    type: str
    detail: str
    field: str | None = None


class ValidationErrorOut(ErrorOut):
    errors: list[dict[str, Any]] | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body could not be parsed"},
    401: {"model": ErrorOut, "description": "Missing, invalid or revoked API key"},
    404: {"model": ErrorOut, "description": "Unknown id (or another tenant's)"},
    409: {"model": ErrorOut, "description": "State conflict"},
    413: {"model": ErrorOut, "description": "Body too large"},
    422: {"model": ValidationErrorOut, "description": "Invalid input"},
    429: {"model": ErrorOut, "description": "Too many active studies"},
    503: {"model": ErrorOut, "description": "The database is busy; retry (Retry-After)"},
}
