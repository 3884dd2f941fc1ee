"""What a job trains: one frozen record, `RunSpec`, for studies and range tests alike.

The API builds it from a request (after its checks), stores `spec.model_dump(mode="json")` as
is, and the worker validates it back with `RunSpec.model_validate(stored)`; the training and
range-test configs embed it. Adding a setting is one edit here.

References, not files: a model is a built-in (or plugin) builder by name, or an upload by
name and content digest; a dataset is a name (and, for an upload, its file). The library
resolves them (lrsearch/models/resolve.py, lrsearch/datasets).

The objective is any metric Keras logs, with a direction. `infer_direction` is the fixed table
of names whose direction may be left out (see README, "Objectives").
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from lrsearch.datasets.references import Registered, Source
from lrsearch.errors import TrainingError
from lrsearch.frozen import Frozen

Direction = Literal["maximize", "minimize"]

# The names whose direction may be omitted. A name matches with or without Keras' "val_"
# prefix. Minimise: names ending in "loss", and these; maximise: names ending in "accuracy",
# and these. Anything else (cosine_similarity included: Keras' metric is maximised, its loss
# minimised) needs an explicit direction.
MINIMIZE_NAMES = ("mae", "mse", "rmse", "mape", "msle", "error")
MAXIMIZE_NAMES = ("auc", "precision", "recall", "f1_score", "iou", "r2_score")
METRIC_NAME = re.compile(r"^[A-Za-z0-9_.>/-]{1,128}$")


def infer_direction(metric: str) -> Direction | None:
    """The direction of a metric name from the fixed table, or None when it is not there."""
    base = metric.removeprefix("val_")
    if base.endswith("loss") or base in MINIMIZE_NAMES:
        return "minimize"
    if base.endswith("accuracy") or base in MAXIMIZE_NAMES:
        return "maximize"
    return None


class Objective(Frozen):
    """What a study optimises: a metric by the name Keras logs it under, and a direction."""

    metric: str = "val_accuracy"
    direction: Direction

    @classmethod
    def of(cls, metric: str, direction: Direction | None) -> Objective:
        """The objective, its direction inferred from the table when not given; a name outside
        the table without a direction raises, naming the table."""
        if not isinstance(metric, str) or not METRIC_NAME.match(metric):
            raise TrainingError("Argument `objective.metric` must be a metric name as Keras "
                                f"logs it (e.g. val_accuracy). Received: metric={metric!r}",
                                field="objective.metric")
        direction = direction or infer_direction(metric)
        if direction is None:
            raise TrainingError(
                f"Argument `objective.direction` is needed for metric `{metric}`: its "
                "direction is inferred only for names ending in `loss` or `accuracy` and for "
                f"{', '.join(MINIMIZE_NAMES)} (minimise) and {', '.join(MAXIMIZE_NAMES)} "
                "(maximise). Received: direction=None", field="objective.direction")
        return cls(metric=metric, direction=direction)


class BuiltinModel(Frozen):
    """A model built by name: a built-in architecture or an operator plugin's builder."""

    kind: Literal["builtin"] = "builtin"
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class UploadedModel(Frozen):
    """A `.keras` file the tenant uploaded, by name and content digest. `init`: "uploaded"
    starts every trial from the saved weights, "fresh" re-initialises them."""

    kind: Literal["upload"] = "upload"
    upload: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    init: Literal["uploaded", "fresh"] = "uploaded"
    compiled: bool = False  # saved with a loss: that loss and those metrics are kept
    file: str | None = None  # where the workers read it (internal: never shown)


ModelRef = Annotated[BuiltinModel | UploadedModel, Field(discriminator="kind")]


class DataRef(Frozen):
    """A dataset by name. An upload: `file` is its .npz (internal: never shown) and `task` what
    the service registered it as ("classes" or "targets"). A reference: `source` (the files
    the workers stream, or a Keras dataset) and, once registered, `registered` (counts,
    shapes, the files' fingerprint); a job on a dataset still being registered waits, and
    the registration's end fills `registered` in."""

    name: str
    file: str | None = None
    task: Literal["classes", "targets"] | None = None
    source: Source | None = None
    registered: Registered | None = None


class OptimizerRef(Frozen):
    name: str = "sgd"
    params: dict[str, Any] = Field(default_factory=dict)


class RunSpec(Frozen):
    """What to train, shared by every trial of a study and by a range test.

    `seed` is the study's: it fixes the validation split. A trial trains with
    `trial_seed(number)` = seed + number, which drives initialisation and data order.
    `loss` and `metrics` are None where the model's own (a compiled upload) or the dataset's
    default (a built-in head) apply."""

    model: ModelRef
    data: DataRef
    optimizer: OptimizerRef = Field(default_factory=OptimizerRef)
    batch_size: int = Field(default=32, ge=1)
    seed: int = Field(default=0, ge=0)
    objective: Objective = Field(default_factory=lambda: Objective(metric="val_accuracy",
                                                                   direction="maximize"))
    loss: str | None = None
    metrics: tuple[str, ...] | None = None
    # How it trains (lrsearch.runtime): Keras' mixed precision (mixed_float16 on a GPU,
    # mixed_bfloat16 without one) and `Model.compile`'s jit_compile (XLA), "auto" for Keras'
    # own choice. Stored specs from before these options read as float32 and "auto".
    mixed_precision: bool = False
    jit_compile: bool | Literal["auto"] = "auto"

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"`metrics` lists a name twice. Received: metrics={list(value)}")
        return value

    @classmethod
    def builtin(cls, dataset: str, model: str = "mlp", model_params: dict[str, Any] | None = None,
                *, optimizer: str = "sgd", optimizer_params: dict[str, Any] | None = None,
                batch_size: int = 32, seed: int = 0, objective: str = "val_accuracy",
                direction: Direction | None = None, dataset_file: str | None = None,
                loss: str | None = None, metrics: tuple[str, ...] | None = None) -> RunSpec:
        """A spec for a built-in model by name (what local runs, benchmarks and tests use)."""
        return cls(model=BuiltinModel(name=model, params=dict(model_params or {})),
                   data=DataRef(name=dataset, file=dataset_file),
                   optimizer=OptimizerRef(name=optimizer, params=dict(optimizer_params or {})),
                   batch_size=batch_size, seed=seed,
                   objective=Objective.of(objective, direction), loss=loss, metrics=metrics)

    def trial_seed(self, number: int) -> int:
        """The seed of trial `number`: the study's seed plus the trial number."""
        return self.seed + number

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> RunSpec:
        """A stored spec back: the `run` key of a study or range-test spec, or (rows written
        before RunSpec existed) the flat dict with dataset, model, optimizer, metric keys."""
        if "run" in stored:
            return cls.model_validate(stored["run"])
        metric = stored.get("metric", "val_accuracy")
        return cls(model=BuiltinModel(**stored.get("model", {"name": "mlp"})),
                   # every dataset was one of class ids then
                   data=DataRef(name=stored["dataset"], file=stored.get("dataset_file"),
                                task="classes" if stored.get("dataset_file") else None),
                   optimizer=OptimizerRef(**stored.get("optimizer", {})),
                   batch_size=stored.get("batch_size", 32), seed=stored.get("seed", 0),
                   objective=Objective.of(metric, stored.get("direction")))
