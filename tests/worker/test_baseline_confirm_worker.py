"""The constant-LR baseline and confirmation runs with real workers and real training: the
baseline trains constant LRs in its own Optuna study, the confirmation runs start only after
every search and baseline slot has ended, a confirmation run whose worker is SIGKILLed is
retried by another worker with the same configuration and seed, Optuna never hears of them,
and `/best` answers with the confirmed mean, std and paired interval."""

from __future__ import annotations

import os
import signal

import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.trial import TrialState
from sqlalchemy.engine import Engine

from service.config import Settings
from service.studies.roles import BASELINE_SUFFIX
from tests.worker.conftest import (
    Workers,
    finished,
    pid_of,
    points,
    study_row,
    submit,
    trials,
    wait_for,
)

pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)  # real processes on 2 cores


def running_confirmation(engine: Engine, sid: str) -> object:
    for t in trials(engine, sid):
        if t.role == "confirm" and t.state == "running" and points(engine, t.id) >= 1:
            return t
    return None


def test_confirmation_runs_after_the_search_and_survive_a_killed_worker(
        client: TestClient, engine: Engine, workers: Workers, settings: Settings) -> None:
    sid = submit(client, family="cosine", n_trials=2, epochs=3, batch_size=32,
                 search_space={"cosine": {"peak_lr": {"low": 0.02, "high": 0.2, "log": True}}},
                 baseline={"trials": 2, "search_space": {"lr": {"low": 0.02, "high": 0.2}}},
                 confirm={"top_k": 1, "seeds": 2})
    # A pause after each epoch leaves time to kill the worker inside a confirmation run.
    first = workers.start(LRSEARCH_FAULT_EPOCH_PAUSE_SECONDS="0.5")
    victim = wait_for(lambda: running_confirmation(engine, sid), 240,
                      "a confirmation run to train")
    rows = trials(engine, sid)
    # The confirmation was queued only once every search and baseline slot had ended.
    assert all(t.state in ("complete", "pruned", "failed") for t in rows if t.slot < 4)
    assert study_row(engine, sid).phase == "confirm"
    assert pid_of(victim.worker) == first.pid  # type: ignore[attr-defined]
    os.kill(first.pid, signal.SIGKILL)
    workers.start()
    wait_for(lambda: finished(engine, sid), 300, "the study to finish after the kill")

    rows = trials(engine, sid)
    assert [t.role for t in rows] == ["search"] * 2 + ["baseline"] * 2 + ["confirm"] * 4
    assert all(t.state == "complete" for t in rows), [(t.slot, t.state) for t in rows]
    retried = next(t for t in rows if t.slot == victim.slot)  # type: ignore[attr-defined]
    assert retried.attempt == 2 and retried.worker != victim.worker  # type: ignore
    assert (retried.seed, retried.params) == (victim.seed, victim.params)  # type: ignore
    assert all(points(engine, t.id) == 3 for t in rows)  # the retry's curve started again
    confirm = [t for t in rows if t.role == "confirm"]
    assert {t.family for t in confirm} == {"cosine", "constant"}
    assert len({t.seed for t in confirm}) == 2  # the same two seeds for both configurations

    # Optuna: the search's study has its 2 trials, the baseline's its 2 constant trials;
    # confirmation runs are in neither.
    name = study_row(engine, sid).optuna_study_name
    searched = optuna.load_study(study_name=name, storage=settings.optuna_url()).trials
    baseline = optuna.load_study(study_name=name + BASELINE_SUFFIX,
                                 storage=settings.optuna_url()).trials
    assert [t.state for t in searched] == [TrialState.COMPLETE] * 2
    assert [t.state for t in baseline] == [TrialState.COMPLETE] * 2
    assert all(set(t.params) == {"lr"} for t in baseline)
    assert {t.number for t in rows if t.role == "baseline"} == {0, 1}

    best = client.get(f"/v1/studies/{sid}/best").json()
    assert best["answer"] == "confirmed" and best["family"] == "cosine"
    c = best["confirmation"]
    assert c["status"] == "finished" and c["winner"]["n"] == 2
    assert c["winner"]["std"] is not None and best["value"] == pytest.approx(c["winner"]["mean"])
    gain = c["gain"]
    assert gain["n"] == 2 and gain["ci95"][0] <= gain["mean"] <= gain["ci95"][1]
    assert best["baseline"]["source"] == "baseline" and best["baseline"]["gain"] is not None
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["counts"]["complete"] == 8 and study["n_slots"] == 8
