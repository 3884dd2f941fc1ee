"""A request's "what to train" checked and turned into the RunSpec the API stores (studies and
range tests share it): the dataset, the model (built-in, plugin builder or upload) fitted to
the dataset, the optimizer, the loss and metrics, the objective."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from lrsearch import keras_names, models, optimizers
from lrsearch.errors import TrainingError
from lrsearch.spec import BuiltinModel, Objective, OptimizerRef, RunSpec, UploadedModel
from service.config import Settings
from service.datasets.ops import Resolved
from service.datasets.ops import resolve as resolve_dataset
from service.errors import Invalid
from service.models import ops as uploads
from service.schemas import Named, Training
from service.workers.ops import Capabilities


def _builtin(settings: Settings, model: Named, found: Resolved, live: Capabilities
             ) -> BuiltinModel:
    if model.name in models.names():
        assert found.shape is not None and found.head is not None
        params = models.validate(model.name, model.params, found.shape, found.head,
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
    """Every check of what a request trains, before anything is stored. On a dataset still
    being registered, the model is fitted to it when the registration ends (`complete`)."""
    found = resolve_dataset(session, settings, tenant, dataset)
    live = uploads.live_capabilities(session, settings)  # read once for every check below
    model: Any
    if isinstance(req.model, Named):
        if found.pending and req.model.name in models.names():
            model = BuiltinModel(name=req.model.name, params=dict(req.model.params))
        else:
            model = _builtin(settings, req.model, found, live)
    else:
        model, row = uploads.reference(session, tenant, req.model.upload, req.model.init,
                                       live)
        if found.shape is not None:
            _check_shape(req.model.upload, row.summary.get("input_shapes") or [], found.shape)
    optimizer = OptimizerRef(name=req.optimizer.name, params=optimizers.resolve_params(
        req.optimizer.name, req.optimizer.params))
    if req.loss is not None:
        _names("loss", [req.loss], keras_names.LOSSES, live.custom_objects, "loss")
    if req.metrics is not None:
        _names("metric", req.metrics, keras_names.METRICS, live.custom_objects, "metrics")
    return RunSpec(model=model, data=found.data,
                   optimizer=optimizer, batch_size=batch_size, seed=seed, objective=goal,
                   loss=req.loss, metrics=tuple(req.metrics) if req.metrics is not None
                   else None, mixed_precision=req.mixed_precision,
                   jit_compile=req.jit_compile)


def complete(session: Session, settings: Settings, tenant: str, run: RunSpec,
             found: Resolved | None = None) -> RunSpec:
    """A run submitted while its dataset was being registered, now that it is ready: the
    registration's facts in its data reference, and a built-in model checked against the
    dataset's shape and head (an upload's input shape too). Raises (422, naming the field)
    when the model does not fit the dataset or the dataset is gone or failed. `found`: the
    dataset as the caller just resolved it."""
    found = found or resolve_dataset(session, settings, tenant, run.data.name)
    if found.shape is None or found.head is None:
        return run
    model = run.model
    if isinstance(model, BuiltinModel) and model.name in models.names():
        model = BuiltinModel(name=model.name, params=models.validate(
            model.name, model.params, found.shape, found.head,
            max_params=settings.max_model_params))
    elif isinstance(model, UploadedModel):
        row = uploads.find(session, tenant, model.upload)
        if row is not None:
            _check_shape(model.upload, row.summary.get("input_shapes") or [], found.shape)
    return run.model_copy(update={"model": model, "data": found.data})


def recheck(session: Session, settings: Settings, tenant: str, stored: dict[str, Any]
            ) -> tuple[dict[str, Any], bool]:
    """Under the tenant's creation lock: the dataset and the uploaded model the run names
    still exist (a deletion may have committed since the request was validated; deletions
    take the same lock, so none can commit after this). Returns the spec to store (completed
    when its dataset became ready meanwhile) and whether its jobs must wait for the dataset's
    registration (the registration's end takes the same lock: service/datasets/registration)."""
    run = RunSpec.from_stored(stored)
    found = resolve_dataset(session, settings, tenant, run.data.name)
    model = run.model
    if isinstance(model, UploadedModel):
        row = uploads.find(session, tenant, model.upload)
        if row is None or row.sha256 != model.sha256:
            raise Invalid(f"Uploaded model `{model.upload}` was deleted or replaced while this "
                          "request was checked; submit it again.", field="model.upload")
    if run.data.source is not None and run.data.registered is None and not found.pending:
        stored = {**stored, "run": complete(session, settings, tenant, run, found).stored()}
    return stored, found.pending
