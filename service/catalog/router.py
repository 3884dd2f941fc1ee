"""What can be asked for: schedule families (with a preview), optimizers (models: see
service/models)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import Field

from lrsearch import optimizers, schedules
from lrsearch.errors import ScheduleError
from lrsearch.schedules.base import param_specs, registry
from service.deps import SettingsDep, get_tenant
from service.errors import Invalid, NotFound
from service.schemas import ERROR_RESPONSES, Strict

# The catalog needs no tenant, but like every /v1 route it needs a valid key.
router = APIRouter(prefix="/v1", tags=["catalog"], dependencies=[Depends(get_tenant)],
                   responses=ERROR_RESPONSES)


class PreviewRequest(Strict):
    params: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(ge=1)
    steps_per_epoch: int = Field(ge=1)
    points: int = Field(default=1000, ge=2, le=100_000)


@router.get("/schedules")
def list_schedules() -> list[dict[str, Any]]:
    """Every schedule family with its parameters, bounds, default search ranges and formula."""
    return [schedules.spec(name) for name in schedules.names()]


def known_family(family: str) -> str:
    """A family named in the path is an ID: unknown ones are 404."""
    if family not in registry.names():
        raise NotFound(f"Unknown schedule family `{family}`. Known families: "
                       f"{', '.join(schedules.names())}", field="family")
    return family


@router.get("/schedules/{family}")
def get_schedule(family: str) -> dict[str, Any]:
    """One schedule family."""
    return schedules.spec(known_family(family))


@router.post("/schedules/{family}/preview")
def preview(family: str, body: PreviewRequest, settings: SettingsDep) -> dict[str, Any]:
    """The LR of a family's parameters at most `points` steps spread over the training (only
    those steps are computed)."""
    known_family(family)
    steps = body.epochs * body.steps_per_epoch
    if steps > settings.max_preview_steps:
        raise Invalid(f"epochs * steps_per_epoch must be <= {settings.max_preview_steps}. "
                      f"Received: {steps}", field="steps_per_epoch")
    timeline = {"steps_per_epoch": body.steps_per_epoch, "epochs": body.epochs,
                "points": body.points}
    try:
        work = schedules.evaluations(family, body.params, **timeline)  # validates the params
    except ScheduleError as e:  # name the field as the body has it: params.<name>
        known = {p.name for p in param_specs(registry.get(family))}
        raise Invalid(str(e), field=f"params.{e.field}" if e.field in known else e.field
                      ) from None
    if work > settings.max_curve_evaluations:
        raise Invalid(f"The preview must take <= {settings.max_curve_evaluations} evaluations "
                      "(LRSEARCH_MAX_CURVE_EVALUATIONS): steps shown x the family's pieces. "
                      f"Received: points={body.points} over {steps} steps of {family} with "
                      f"{schedules.make(family, body.params).pieces()} pieces = {work}; "
                      "ask for fewer points", field="points")
    idx, lrs = schedules.sampled_curve(family, body.params, **timeline)
    return {"family": family, "adaptive": registry.get(family).adaptive,
            "step": idx.tolist(), "epoch": (idx / body.steps_per_epoch).tolist(),
            "lr": lrs.tolist()}


@router.get("/optimizers")
def list_optimizers() -> list[dict[str, Any]]:
    """Optimizers and their parameters."""
    return optimizers.describe()
