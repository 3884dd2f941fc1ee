"""How long a study still has to run, estimated from its own trials' durations. The one place
the estimate is made: the API's `eta_seconds`, the web pages and `lrsearch wait` all show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from service.db import utcnow
from service.studies.models import FINISHED, Study, Trial

# The trials whose durations predict a slot's: they ran to an end of their own. A cancelled
# trial was stopped from outside (a user, a budget), so its duration says nothing of a slot's.
TIMED = ("complete", "pruned", "failed")


def estimate(mean_duration: float | None, elapsed: Sequence[float], queued: int,
             parallel: int | None = None) -> float | None:
    """Seconds until the study's slots have all run, or None when it cannot be estimated (no
    trial has finished, so there is no duration to go by).

    With D the mean duration of the finished trials (complete, pruned or failed), e_j the
    elapsed seconds of each running trial, Q the queued slots and P the trials run at once:

        ETA = (Q * D + sum_j max(D - e_j, 0)) / P

    the work left (each queued slot takes D, each running trial the rest of its D, nothing once
    it has run longer) shared by P workers. P defaults to the number of running trials (the
    workers on this study now), at least 1: a study whose trials all wait still gets a worker
    eventually.
    """
    if mean_duration is None or queued < 0:
        return None
    workers = max(1, len(elapsed) if parallel is None else parallel)
    left = queued * mean_duration + sum(max(mean_duration - e, 0.0) for e in elapsed)
    return left / workers


def _seconds_since(start: datetime | None, now: datetime) -> float:
    return max(0.0, (now - start).total_seconds()) if start is not None else 0.0


def of(session: Session, study: Study, now: datetime | None = None) -> float | None:
    """The study's estimate (`estimate` over its trials' rows), None once it has finished or
    before any trial has. Every slot counts, baseline and confirmation runs included; the
    confirmation's runs count only once they are queued (when the search ends). A time budget
    (`budget.max_seconds`) caps it: the study stops when that runs out."""
    if study.status in FINISHED:
        return None
    if (study.n_complete or 0) + (study.n_pruned or 0) + (study.n_failed or 0) == 0:
        return None  # nothing has finished: spare the queries
    now = now or utcnow()
    mean = session.scalar(select(func.avg(Trial.duration_s)).where(
        Trial.study_id == study.id, Trial.state.in_(TIMED), Trial.duration_s.is_not(None)))
    started = session.scalars(select(Trial.started_at).where(
        Trial.study_id == study.id, Trial.state == "running")).all()
    eta = estimate(None if mean is None else float(mean),
                   [_seconds_since(s, now) for s in started], study.n_queued or 0)
    budget = ((study.spec or {}).get("budget") or {}).get("max_seconds")
    if eta is not None and budget is not None and study.started_at is not None:
        eta = min(eta, max(0.0, float(budget) - _seconds_since(study.started_at, now)))
    return eta


def of_row(study: object) -> float | None:
    """`of` for a study row read by a session that is still open (what the API and the pages
    show); None for anything else."""
    if not isinstance(study, Study):
        return None
    session = object_session(study)
    return None if session is None else of(session, study)
