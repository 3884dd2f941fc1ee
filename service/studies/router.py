"""/v1/studies: submit, poll, read the best schedule, cancel, delete."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Header, Path, Query
from fastapi.responses import Response

from service.deps import SessionDep, SettingsDep, TenantDep
from service.schemas import ERROR_RESPONSES, Page
from service.studies import importance, ops, plots
from service.studies.models import STUDY_STATES
from service.studies.schemas import ImportanceOut, StudyCreate, StudyOut, TrialOut

router = APIRouter(prefix="/v1/studies", tags=["studies"], responses=ERROR_RESPONSES)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]
Limit = Annotated[int, Query(ge=1, le=500)]


@router.post("", status_code=201)
def create_study(body: StudyCreate, session: SessionDep, settings: SettingsDep,
                 tenant: TenantDep, idempotency_key: IdempotencyKey = None) -> StudyOut:
    """Submit a schedule search; a retry with the same Idempotency-Key returns the same study."""
    return StudyOut.of(ops.create(session, settings, tenant, body, idempotency_key))


@router.get("")
def list_studies(session: SessionDep, tenant: TenantDep, offset: Offset = 0, limit: Limit = 50,
                 status: Annotated[str | None, Query(pattern="^(" + "|".join(STUDY_STATES)
                                                     + ")$")] = None) -> Page:
    """Studies, newest first, optionally only those with one status."""
    rows, total = ops.list_studies(session, tenant, status, offset, limit)
    return Page(items=[StudyOut.of(s) for s in rows], total=total, offset=offset, limit=limit)


@router.get("/{study_id}")
def get_study(study_id: str, session: SessionDep, tenant: TenantDep) -> StudyOut:
    """Status, counts and the best trial so far (read from the study's summary row)."""
    return StudyOut.of(ops.get(session, tenant, study_id))


@router.get("/{study_id}/best")
def get_best(study_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """The best schedule: parameters, curves, Keras config and snippet (and a leaderboard)."""
    return ops.best(session, ops.get(session, tenant, study_id))


@router.get("/{study_id}/trials")
def list_trials(study_id: str, session: SessionDep, tenant: TenantDep, offset: Offset = 0,
                limit: Limit = 100) -> Page:
    """The study's trials by slot."""
    rows, total = ops.list_trials(session, ops.get(session, tenant, study_id), offset, limit)
    return Page(items=[TrialOut.of(t) for t in rows], total=total, offset=offset, limit=limit)


@router.get("/{study_id}/trials/{number}")
def get_trial(study_id: str, number: Annotated[int, Path(ge=0, le=2**31 - 1)],
              session: SessionDep, tenant: TenantDep,
              role: Annotated[Literal["search", "baseline"], Query(description=(
                  "`baseline`: a trial of the constant-LR baseline (numbered in its own "
                  "Optuna study)"))] = "search") -> TrialOut:
    """One trial with its per-epoch history (live while it runs)."""
    study = ops.get(session, tenant, study_id)
    return TrialOut.of(ops.get_trial(session, study, number, role), with_history=True)


@router.get("/{study_id}/importance")
def get_importance(study_id: str, session: SessionDep, tenant: TenantDep) -> ImportanceOut:
    """Parameter importance per family: Optuna's fANOVA (seed 0) over each family's complete
    search trials, for the families with at least 2 of them and a searched parameter; the
    others are named in `reasons` with why."""
    result = importance.of(session, ops.get(session, tenant, study_id))
    return ImportanceOut.model_validate(result.as_dict())


PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "A PNG image."}}


@router.get("/{study_id}/plots/{kind}.png", response_class=Response, responses=PNG)
def get_plot(study_id: str, kind: plots.PlotKind, session: SessionDep, tenant: TenantDep
             ) -> Response:
    """A plot as PNG: `lr_curves` (the top trials' schedules over their validation curves),
    `history` (optimization history), `leaderboard` (best per family; cross-family studies),
    `importance` (parameter importance per family, as /importance gives it), `params` (each
    searched parameter's value against the objective, a row of panels per family)."""
    png = plots.render(session, ops.get(session, tenant, study_id), kind)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post("/{study_id}/cancel")
def cancel_study(study_id: str, session: SessionDep, tenant: TenantDep) -> StudyOut:
    """Cancel: queued slots now, running trials at their next epoch (409 when finished)."""
    return StudyOut.of(ops.cancel(session, ops.get(session, tenant, study_id)))


@router.delete("/{study_id}", status_code=204)
def delete_study(study_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
                 background: BackgroundTasks) -> None:
    """Delete a finished or cancelled study with its trials, curves and Optuna study."""
    study = ops.get(session, tenant, study_id)
    optuna_name = study.optuna_study_name
    ops.delete(session, study)
    # After our commit (the session dependency commits before background tasks run): a
    # failure here leaves an Optuna study without a row, which the workers' reconciler
    # deletes; the other order could delete the Optuna study of a study that still exists.
    background.add_task(ops.delete_optuna_study, settings, optuna_name)
