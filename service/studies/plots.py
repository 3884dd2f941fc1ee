"""A study's plots as PNG: the data comes from our tables, the drawing from lrsearch.plots."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from lrsearch import plots
from service.errors import NotFound
from service.studies import importance, ops
from service.studies.models import Study, Trial
from service.studies.progress import objective_of
from service.studies.schemas import TrialOut

# Every kind a plot URL may name: FastAPI refuses any other before it reaches `render`.
PlotKind = Literal["lr_curves", "history", "leaderboard", "importance", "params"]
TOP = 5  # trials drawn by lr_curves


def _title(study: Study, what: str) -> str:
    return f"{study.name or study.id}: {what}"


def _top_trials(session: Session, study: Study) -> list[dict[str, Any]]:
    """The TOP best complete trials, with their per-epoch history."""
    maximize = objective_of(study.spec)[1] == "maximize"
    order = Trial.value.desc() if maximize else Trial.value.asc()
    rows = session.scalars(select(Trial).options(selectinload(Trial.points))
                           .where(Trial.study_id == study.id, Trial.role == "search",
                                  Trial.state == "complete", Trial.value.is_not(None))
                           .order_by(order).limit(TOP)).all()
    return [TrialOut.of(t, with_history=True).model_dump() for t in rows]


def _finished_trials(session: Session, study: Study) -> list[dict[str, Any]]:
    rows = session.execute(select(Trial.number, Trial.state, Trial.value)
                           .where(Trial.study_id == study.id, Trial.role == "search",
                                  Trial.state.in_(("complete", "pruned")))).all()
    return [{"number": n, "state": s, "value": v} for n, s, v in rows]


def _param_families(session: Session, study: Study) -> list[dict[str, Any]]:
    """Each family with searched parameters and finished search trials (complete, pruned,
    failed): its parameters (name, log scale, choices or range) and those trials."""
    rows = importance.search_trials(session, study, ("complete", "pruned", "failed"))
    out = []
    for space in importance.spaces(study.spec):
        if not space.distributions or not any(r.family == space.family for r in rows):
            continue
        params = [{"name": name, "log": space.log(name),
                   "choices": list(getattr(d, "choices", None) or []) or None,
                   "low": getattr(d, "low", None), "high": getattr(d, "high", None)}
                  for name, d in space.distributions.items()]
        trials = [{"params": r.params, "state": r.state, "value": r.value}
                  for r in rows if r.family == space.family]
        out.append({"family": space.family, "params": params, "trials": trials})
    return out


def render(session: Session, study: Study, kind: PlotKind) -> bytes:
    """PNG bytes of one plot. A plot of a running study shows what has finished so far."""
    spec = study.spec
    metric, direction = objective_of(spec)
    if kind == "lr_curves":
        fig = plots.study_lr_curves(_top_trials(session, study), metric=metric,
                                    direction=direction, epochs=spec["epochs"], top=TOP,
                                    title=_title(study, f"top {TOP} schedules and their "
                                                 f"{metric}"))
    elif kind == "history":
        fig = plots.study_history(_finished_trials(session, study), metric=metric,
                                  direction=direction,
                                  title=_title(study, "optimization history"))
    elif kind == "importance":
        fig = plots.param_importances(importance.of(session, study).as_dict(),
                                      title=_title(study, "parameter importance (fANOVA)"))
    elif kind == "params":
        fig = plots.param_values(_param_families(session, study), metric=metric,
                                 title=_title(study, f"parameters against {metric}"))
    else:
        if len(spec["families"]) < 2:
            raise NotFound(f"Study `{study.id}` searches one family; the leaderboard plot "
                           "exists for cross-family studies (`families`).", field="kind")
        fig = plots.leaderboard(ops.leaderboard(session, study), metric=metric,
                                title=_title(study, "best trial per family"))
    return plots.png(fig)
