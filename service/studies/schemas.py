"""Study requests and responses."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field, field_validator

from lrsearch.errors import redact_paths
from lrsearch.spec import RunSpec
from service.notifications.urls import MAX_URL, check_syntax
from service.schemas import ObjectiveIn, ProvenanceOut, Strict, Training, finite_or_none
from service.studies import eta


class SamplerSpec(Strict):
    name: Literal["tpe", "random", "grid", "cmaes", "qmc"] = "tpe"
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    grid_points: int = Field(default=5, ge=2, le=100, description="grid: values per parameter")


class PrunerSpec(Strict):
    name: Literal["median", "hyperband", "successive_halving", "none"] = "median"


class BudgetSpec(Strict):
    """When a study stops before running every slot: after this many epochs trained in all
    (every attempt of every trial), this many seconds since its first trial started, or this
    many finished trials without a better value. Running trials stop at their next epoch."""

    max_epochs: int | None = Field(default=None, ge=1, le=2**31 - 1)
    max_seconds: float | None = Field(default=None, gt=0, le=10 * 365 * 86400)
    patience: int | None = Field(default=None, ge=1, le=2**31 - 1)


class BaselineSpec(Strict):
    """The constant-LR baseline: `trials` extra trials tune a constant LR with the study's
    optimizer, model and data, in an Optuna study of their own, so `/best` can say how much the
    best schedule gains over the best constant LR. On by default for studies whose families do
    not include `constant`; `trials` defaults to a quarter of `n_trials`, at least 2."""

    enabled: bool = True
    trials: int | None = Field(default=None, ge=1, le=2**31 - 1)
    search_space: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "overrides of the constant family's `lr` range (default: the range test's bounds "
        "when range_test_id is given, else the family's own)"))


class ConfirmSpec(Strict):
    """Confirmation (opt-in): once the search has ended, the `top_k` best configurations and
    the best constant LR are retrained for the full epochs with `seeds` fresh seeds each (the
    same seeds for every configuration, so differences are paired); the winner is the best
    mean."""

    top_k: int = Field(default=3, ge=1, le=20)
    seeds: int = Field(default=3, ge=2, le=20)


class NotifySpec(Strict):
    """Where to POST the study's summary once it ends (succeeded, failed or cancelled),
    signed with the tenant's webhook secret (README: "Notifications")."""

    url: str = Field(max_length=MAX_URL, description=(
        "an http or https URL without user name or password; its host must be allowed by "
        "LRSEARCH_NOTIFY_ALLOWED_HOSTS (by default: public addresses only)"))

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_syntax(value)


class StudyCreate(Training):
    """A schedule search. Give `family` (one) or `families` (a cross-family search)."""

    name: str | None = Field(default=None, max_length=200)
    family: str | None = Field(default=None, max_length=64)
    families: list[str] | None = Field(default=None, min_length=1, max_length=32)
    dataset: str = Field(max_length=64)
    epochs: int = Field(ge=1, le=2**31 - 1)
    batch_size: int = Field(default=32, ge=1, le=2**31 - 1)
    n_trials: int = Field(ge=1, le=2**31 - 1)
    objective: ObjectiveIn | None = None
    metric: str | None = Field(default=None, max_length=128, description=(
        "Deprecated: use objective.metric (kept as an alias)"))
    direction: Literal["maximize", "minimize"] | None = Field(default=None, description=(
        "Deprecated: use objective.direction (kept as an alias)"))
    search_space: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    range_test_id: str | None = Field(default=None, max_length=32)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    budget: BudgetSpec | None = None
    baseline: BaselineSpec | None = Field(default=None, description=(
        "the constant-LR baseline; null: on unless the families include `constant`"))
    confirm: ConfirmSpec | None = None
    notify: NotifySpec | None = Field(default=None, description=(
        "a webhook called once when the study ends"))


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
    n_trials: int = Field(description="the search's trial slots, as submitted")
    n_slots: int = Field(description="every slot: the search's, the constant-LR baseline's, "
                         "and the confirmation runs once the search has ended; `counts` "
                         "counts them all")
    phase: str = Field(description="`search`; `confirm` once confirmation runs are queued; "
                       "`ended` when the study stopped early because every trial would fail "
                       "(no confirmation then)")
    counts: Counts
    best: Best | None
    error: str | None
    stop_reason: str | None = Field(default=None, description="why the study stopped before "
                                    "running every slot (a budget), or null")
    epochs_run: int = 0
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    request: dict[str, Any]
    optuna_study_name: str = Field(description="the study's name in the Optuna storage "
                                   "(optuna.load_study, optuna-dashboard)")
    eta_seconds: float | None = Field(default=None, description=(
        "estimated seconds until every slot has run: (queued slots x mean duration of the "
        "finished trials + what the running trials have left of that mean) / the trials "
        "running now (at least 1), capped by budget.max_seconds; null before any trial "
        "finished and once the study has"))

    @classmethod
    def of(cls, study: Any) -> StudyOut:
        """The study row as the API shows it. `eta_seconds` is read from its trials through
        the session that loaded it (two small queries, only while it runs and after a trial
        finished: service/studies/eta.py)."""
        best = None
        if study.best_trial_number is not None:
            best = Best(value=finite_or_none(study.best_value),
                        trial_number=study.best_trial_number, family=study.best_family,
                        params=study.best_params)
        return cls(id=study.id, name=study.name, status=study.status,
                   families=study.spec["families"],
                   dataset=RunSpec.from_stored(study.spec).data.name,
                   n_trials=study.n_trials, n_slots=study.n_slots or study.n_trials,
                   phase=study.phase or "search",
                   counts=Counts(queued=study.n_queued, running=study.n_running,
                                 complete=study.n_complete, pruned=study.n_pruned,
                                 failed=study.n_failed, cancelled=study.n_cancelled),
                   best=best, error=redact_paths(study.error),
                   stop_reason=study.stop_reason, epochs_run=study.epochs_run or 0,
                   created_at=study.created_at,
                   started_at=study.started_at, finished_at=study.finished_at,
                   request=study.request, optuna_study_name=study.optuna_study_name,
                   eta_seconds=finite_or_none(eta.of_row(study)))


class ImportanceOut(BaseModel):
    """Parameter importance per schedule family: Optuna's fANOVA evaluator (a fixed seed)
    over each family's complete search trials (service/studies/importance.py)."""

    evaluator: str = Field(description="`fanova`: optuna.importance.FanovaImportanceEvaluator")
    seed: int = Field(description="the evaluator's seed: the same trials give the same numbers")
    min_trials: int = Field(description="complete trials a family needs for an importance")
    max_trials: int = Field(description="complete trials per family evaluated at most (evenly "
                            "spaced by trial number beyond that)")
    importances: dict[str, dict[str, float]] = Field(description=(
        "family -> parameter -> importance (largest first; a family's sum to 1)"))
    trials: dict[str, int] = Field(description="family -> the complete trials evaluated")
    complete: dict[str, int] = Field(description="family -> its complete search trials")
    reasons: dict[str, str] = Field(description="family left out of `importances` -> why")


REMOVAL = "lrsearch 2.0"


def _alias(name: str) -> Any:
    """A deprecated response field that repeats `metrics[name]` (marked in the OpenAPI)."""
    return computed_field(
        description=f"Deprecated: the same as `metrics.{name}`; removed in {REMOVAL}.",
        json_schema_extra={"deprecated": True})


class EpochOut(BaseModel):
    """One epoch of a trial. `metrics` holds every metric Keras logged, by Keras' names; the
    fields `loss`, `val_loss`, `metric` (accuracy) and `val_metric` (val_accuracy) repeat four
    of them for clients written before `metrics`, until lrsearch 2.0."""

    epoch: int
    lr_first: float | None
    lr_last: float | None
    seconds: float | None
    metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="every metric Keras logged for the epoch, by its Keras name (loss, "
                    "val_loss, accuracy, val_accuracy, mae, val_auc, ...); null where the "
                    "value was not finite")

    @_alias("loss")  # type: ignore[prop-decorator]
    @property
    def loss(self) -> float | None:
        return self.metrics.get("loss")

    @_alias("val_loss")  # type: ignore[prop-decorator]
    @property
    def val_loss(self) -> float | None:
        return self.metrics.get("val_loss")

    @_alias("accuracy")  # type: ignore[prop-decorator]
    @property
    def metric(self) -> float | None:
        return self.metrics.get("accuracy")

    @_alias("val_accuracy")  # type: ignore[prop-decorator]
    @property
    def val_metric(self) -> float | None:
        return self.metrics.get("val_accuracy")

    @classmethod
    def of(cls, p: Any) -> EpochOut:
        return cls(epoch=p.epoch, metrics={name: finite_or_none(value)
                                           for name, value in (p.metrics or {}).items()},
                   **{k: finite_or_none(getattr(p, k)) for k in ("lr_first", "lr_last",
                                                                  "seconds")})


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
    seed: int | None = Field(default=None, description="the seed the trial ran with (null for "
                             "trials recorded before seeds were kept)")
    role: str = Field(default="search", description="`search`, `baseline` (the constant-LR "
                      "baseline; its numbers are those of its own Optuna study) or `confirm` "
                      "(a confirmation run: no Optuna number)")
    confirms: int | None = Field(default=None, description="a confirmation run's: the slot of "
                                 "the trial whose configuration it retrains")
    resumed_from_epoch: int | None = Field(
        default=None, description="when its last attempt resumed from a checkpoint another "
        "attempt left (its worker stopped or died): the epoch it resumed at; the epochs before "
        "it are the earlier attempts'")
    provenance: ProvenanceOut | None = Field(
        default=None, description="what its last attempt trained on: Keras backend and "
        "version, Keras version, device, precision policy, XLA (null before it started, and "
        "for trials recorded before provenance was kept)")
    history: list[EpochOut] | None = None

    @classmethod
    def of(cls, t: Any, with_history: bool = False) -> TrialOut:
        return cls(number=t.number, slot=t.slot, family=t.family, params=t.params,
                   state=t.state, value=finite_or_none(t.value),
                   failure_reason=redact_paths(t.failure_reason),
                   attempt=t.attempt, worker=t.worker, started_at=t.started_at,
                   finished_at=t.finished_at, duration_s=finite_or_none(t.duration_s),
                   steps_per_epoch=t.steps_per_epoch, seed=t.seed, role=t.role or "search",
                   confirms=t.confirms, resumed_from_epoch=t.resumed_from_epoch,
                   provenance=ProvenanceOut.of(t.provenance),
                   history=[EpochOut.of(p) for p in t.points] if with_history else None)
