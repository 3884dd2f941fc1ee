"""A request's "what to train" checked and turned into the RunSpec the API stores (studies and
range tests share it): the dataset, the model (built-in, plugin builder or upload) fitted to
the dataset, the optimizer, the loss and metrics, the objective."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from lrsearch import keras_names, models, optimizers
from lrsearch.errors import TrainingError
from lrsearch.spec import BuiltinModel, DataRef, Objective, OptimizerRef, RunSpec, UploadedModel
from service.config import Settings
from service.datasets.ops import head as dataset_head
from service.datasets.ops import resolve as resolve_dataset
from service.errors import Invalid
from service.models import ops as uploads
from service.schemas import Named, Training
from service.workers.ops import Capabilities


def _builtin(settings: Settings, model: Named, shape: tuple[int, ...], head: models.Head,
             live: Capabilities) -> BuiltinModel:
    if model.name in models.names():
        params = models.validate(model.name, model.params, shape, head,
                                 max_params=settings.max_model_params)
    else:  # a plugin's builder: its size is checked by the worker that builds it
        params = uploads.builder_params(model.name, model.params, live)
    return BuiltinModel(name=model.name, params=params)


def _check_shape(name: str, declared: list[list[int | None]], shape: tuple[int, ...]) -> None:
    """An upload with one input must accept the dataset's samples (None dims accept any)."""
    if len(declared) != 1:
        return  # several inputs, or not written in the config: the worker finds out
    want = declared[0][1:]
    ok = len(want) == len(shape) and all(w is None or w == s for w, s in zip(want, shape,
                                                                                 strict=True))
    if not ok:
        raise Invalid(f"Model `{name}` takes inputs of shape {tuple(want)}, but the dataset's "
                      f"samples have shape {shape}.", field="model.upload")


def _names(kind: str, values: list[str], known: tuple[str, ...], custom: set[str],
           field: str) -> None:
    for value in values:
        if value not in known and value not in custom:
            raise TrainingError(f"Unknown {kind} `{value}`: give a Keras {kind} identifier "
                                f"(e.g. {', '.join(known[:3])}) or a plugin's registered "
                                f"name. Received: {field}={value!r}", field=field)


def objective(req: Any) -> Objective:
    """`objective`, or the deprecated `metric`/`direction` pair (not both)."""
    given = getattr(req, "objective", None)
    if given is not None:
        if req.metric is not None or req.direction is not None:
            raise Invalid("Give `objective` or the deprecated `metric`/`direction`, not both.",
                          field="objective")
        return Objective.of(given.metric, given.direction)
    return Objective.of(getattr(req, "metric", None) or "val_accuracy",
                        getattr(req, "direction", None))


def run_spec(session: Session, settings: Settings, tenant: str, req: Training, *,
             dataset: str, batch_size: int, seed: int, goal: Objective) -> RunSpec:
    """Every check of what a request trains, before anything is stored."""
    shape, dataset_file = resolve_dataset(session, settings, tenant, dataset)
    head = dataset_head(session, tenant, dataset)
    live = uploads.live_capabilities(session, settings)  # read once for every check below
    model: Any
    if isinstance(req.model, Named):
        model = _builtin(settings, req.model, shape, head, live)
    else:
        model, row = uploads.reference(session, tenant, req.model.upload, req.model.init,
                                       live)
        _check_shape(req.model.upload, row.summary.get("input_shapes") or [], shape)
    optimizer = OptimizerRef(name=req.optimizer.name, params=optimizers.resolve_params(
        req.optimizer.name, req.optimizer.params))
    if req.loss is not None:
        _names("loss", [req.loss], keras_names.LOSSES, live.custom_objects, "loss")
    if req.metrics is not None:
        _names("metric", req.metrics, keras_names.METRICS, live.custom_objects, "metrics")
    data = DataRef(name=dataset, file=dataset_file,
                   task=head.kind if dataset_file is not None else None)
    return RunSpec(model=model, data=data,
                   optimizer=optimizer, batch_size=batch_size, seed=seed, objective=goal,
                   loss=req.loss, metrics=tuple(req.metrics) if req.metrics is not None
                   else None)


def recheck(session: Session, settings: Settings, tenant: str, stored: dict[str, Any]) -> None:
    """Under the tenant's creation lock: the dataset and the uploaded model the run names
    still exist (a deletion may have committed since the request was validated; deletions
    take the same lock, so none can commit after this)."""
    run = RunSpec.from_stored(stored)
    resolve_dataset(session, settings, tenant, run.data.name)
    model = run.model
    if isinstance(model, UploadedModel):
        row = uploads.find(session, tenant, model.upload)
        if row is None or row.sha256 != model.sha256:
            raise Invalid(f"Uploaded model `{model.upload}` was deleted or replaced while this "
                          "request was checked; submit it again.", field="model.upload")
