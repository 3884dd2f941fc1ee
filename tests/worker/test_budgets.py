"""Study budgets with a real worker: a study whose epochs budget runs out stops mid-way (the
trial at the limit is cancelled, the queued slots too), ends succeeded with its best, and says
why; and the patience budget, played through the service functions a worker calls."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.config import Settings
from service.jobs.models import Job
from service.studies import progress
from tests.service.helpers import run_trial
from tests.worker.conftest import Workers, finished, study_row, submit, trials, wait_for


def test_an_epochs_budget_stops_the_study_with_its_reason(client: TestClient, engine: Engine,
                                                         workers: Workers,
                                                         settings: Settings) -> None:
    # One worker runs the slots one after another: trial 0 trains epochs 1-2, trial 1's
    # first epoch is the third, which spends the budget.
    sid = submit(client, n_trials=5, epochs=2, budget={"max_epochs": 3})
    workers.start()
    wait_for(lambda: finished(engine, sid), 240, "the study to stop")
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == "succeeded" and study["best"] is not None
    assert study["stop_reason"] == "budget: 3 epochs trained (max_epochs=3)"
    assert study["epochs_run"] == 3
    assert study["counts"]["complete"] == 1 and study["counts"]["queued"] == 0
    assert study["counts"]["cancelled"] == 4  # trial 1 at its limit, slots 2-4 never ran
    states = sorted(t.state for t in trials(engine, sid))
    assert states.count("complete") == 1 and "running" not in states


def test_patience_stops_after_k_trials_without_a_better_value(client: TestClient,
                                                             engine: Engine) -> None:
    sid = submit(client, n_trials=6, budget={"patience": 2})
    for slot, value in enumerate([0.5, 0.7, 0.6, 0.65]):
        run_trial(engine, sid, slot, "constant", {"lr": 0.1}, value)
        with Session(engine) as s, s.begin():  # what the worker does after each trial
            s.execute(update(Job).where(Job.study_id == sid, Job.slot == slot)
                      .values(state="done"))
            reason = progress.stop_for_budget(s, sid)
        assert (reason is None) == (slot < 3), (slot, reason)
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["stop_reason"] == "budget: 2 finished trials without a better value " \
                                   "(patience=2)"
    assert study["status"] == "succeeded" and study["best"]["value"] == 0.7
    assert study["counts"]["cancelled"] == 2 and study_row(engine, sid).since_best == 2
    with Session(engine) as s, s.begin():  # stopping twice changes nothing
        assert progress.stop_for_budget(s, sid) is None


def test_budgets_are_checked_at_submission(client: TestClient) -> None:
    r = client.post("/v1/studies", json={"family": "constant", "dataset": "digits",
                                         "epochs": 2, "n_trials": 2,
                                         "budget": {"max_epochs": 0}})
    assert r.status_code == 422 and "budget" in r.text
    r = client.post("/v1/studies", json={"family": "constant", "dataset": "digits",
                                         "epochs": 2, "n_trials": 2,
                                         "budget": {"max_epochs": 4, "minutes": 3}})
    assert r.status_code == 422 and "minutes" in r.text
