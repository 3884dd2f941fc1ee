"""Test helpers: row counts, and a stand-in for a worker that records trials through the same
service functions the worker uses."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.jobs.models import Job
from service.studies import progress
from service.studies.models import Study

# The baseline off: these studies have exactly their n_trials slots (tests/service/
# test_baseline_confirm.py covers the default, which adds the constant-LR baseline's slots).
STUDY = {"family": "one_cycle", "dataset": "digits", "epochs": 5, "n_trials": 3,
         "baseline": {"enabled": False}}


def count(engine: Engine, model: Any) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def jobs_of(engine: Engine, study_id: str) -> list[Job]:
    with Session(engine) as s:
        return list(s.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.slot)))


def run_trial(engine: Engine, study_id: str, slot: int, family: str, params: dict[str, Any],
              value: float | None, *, state: str = "complete", epochs: int = 3,
              spe: int = 7, reason: str | None = None, number: int | None = -1) -> None:
    """Record a whole trial as a worker would: start, one point per epoch, finish. Its Optuna
    number is the slot unless given (None: a confirmation run, which has none)."""
    with Session(engine) as s, s.begin():
        study = s.get(Study, study_id)
        assert study is not None
        trial = progress.start_trial(s, study, slot=slot, number=slot if number == -1 else number,
                                     family=family,
                                     params=params, steps_per_epoch=spe, worker="test")
        for e in range(epochs):
            progress.add_epoch(s, trial, {"epoch": e, "lr_first": 0.1, "lr_last": 0.09,
                                          "seconds": 0.5, "metrics": {
                                              "loss": 1.0 / (e + 1), "val_loss": 1.1 / (e + 1),
                                              "accuracy": 0.5 + e / 10,
                                              "val_accuracy": 0.4 + e / 10}})
        progress.finish_trial(s, study, trial, state, value, reason)
