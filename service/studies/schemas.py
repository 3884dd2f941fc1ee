"""Study requests and responses."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from lrsearch.errors import redact_paths
from service.schemas import Named, Strict, finite_or_none

Metric = Literal["val_accuracy", "val_loss", "accuracy", "loss"]


class SamplerSpec(Strict):
    name: Literal["tpe", "random", "grid", "cmaes", "qmc"] = "tpe"
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    grid_points: int = Field(default=5, ge=2, le=100, description="grid: values per parameter")


class PrunerSpec(Strict):
    name: Literal["median", "hyperband", "successive_halving", "none"] = "median"


class StudyCreate(Strict):
    """A schedule search. Give `family` (one) or `families` (a cross-family search)."""

    name: str | None = Field(default=None, max_length=200)
    family: str | None = Field(default=None, max_length=64)
    families: list[str] | None = Field(default=None, min_length=1, max_length=32)
    dataset: str = Field(max_length=64)
    model: Named = Field(default_factory=lambda: Named(name="mlp"))
    optimizer: Named = Field(default_factory=lambda: Named(name="sgd"))
    epochs: int = Field(ge=1, le=2**31 - 1)
    batch_size: int = Field(default=32, ge=1, le=2**31 - 1)
    n_trials: int = Field(ge=1, le=2**31 - 1)
    metric: Metric = "val_accuracy"
    direction: Literal["maximize", "minimize"] | None = None
    search_space: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    range_test_id: str | None = Field(default=None, max_length=32)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class Counts(BaseModel):
    queued: int
    running: int
    complete: int
    pruned: int
    failed: int
    cancelled: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def finished(self) -> int:
        """Trials that ended: complete + pruned + failed + cancelled."""
        return self.complete + self.pruned + self.failed + self.cancelled


class Best(BaseModel):
    value: float | None
    trial_number: int | None
    family: str | None
    params: dict[str, Any] | None


class StudyOut(BaseModel):
    id: str
    name: str | None
    status: str
    families: list[str]
    dataset: str
    n_trials: int
    counts: Counts
    best: Best | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    request: dict[str, Any]
    optuna_study_name: str = Field(description="the study's name in the Optuna storage "
                                   "(optuna.load_study, optuna-dashboard)")

    @classmethod
    def of(cls, study: Any) -> StudyOut:
        best = None
        if study.best_trial_number is not None:
            best = Best(value=finite_or_none(study.best_value),
                        trial_number=study.best_trial_number, family=study.best_family,
                        params=study.best_params)
        return cls(id=study.id, name=study.name, status=study.status,
                   families=study.spec["families"], dataset=study.spec["dataset"],
                   n_trials=study.n_trials,
                   counts=Counts(queued=study.n_queued, running=study.n_running,
                                 complete=study.n_complete, pruned=study.n_pruned,
                                 failed=study.n_failed, cancelled=study.n_cancelled),
                   best=best, error=redact_paths(study.error), created_at=study.created_at,
                   started_at=study.started_at, finished_at=study.finished_at,
                   request=study.request, optuna_study_name=study.optuna_study_name)


class EpochOut(BaseModel):
    epoch: int
    lr_first: float | None
    lr_last: float | None
    loss: float | None
    val_loss: float | None
    metric: float | None
    val_metric: float | None
    seconds: float | None

    @classmethod
    def of(cls, p: Any) -> EpochOut:
        return cls(epoch=p.epoch, **{k: finite_or_none(getattr(p, k)) for k in (
            "lr_first", "lr_last", "loss", "val_loss", "metric", "val_metric", "seconds")})


class TrialOut(BaseModel):
    number: int | None
    slot: int
    family: str | None
    params: dict[str, Any] | None
    state: str
    value: float | None
    failure_reason: str | None
    attempt: int
    worker: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    steps_per_epoch: int | None
    history: list[EpochOut] | None = None

    @classmethod
    def of(cls, t: Any, with_history: bool = False) -> TrialOut:
        return cls(number=t.number, slot=t.slot, family=t.family, params=t.params,
                   state=t.state, value=finite_or_none(t.value),
                   failure_reason=redact_paths(t.failure_reason),
                   attempt=t.attempt, worker=t.worker, started_at=t.started_at,
                   finished_at=t.finished_at, duration_s=finite_or_none(t.duration_s),
                   steps_per_epoch=t.steps_per_epoch,
                   history=[EpochOut.of(p) for p in t.points] if with_history else None)
