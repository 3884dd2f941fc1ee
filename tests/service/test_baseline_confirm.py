"""The constant-LR baseline and confirmation runs, through the API and the service functions a
worker calls (tests/worker/test_baseline_confirm_worker.py runs them with real workers): the
slots a submission creates, the gain `/best` reports (and says so plainly when the constant
wins), the confirmation queued when the search ends, with mean, std and a paired t interval
checked against scipy, and a budget that ends the search before it."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
from fastapi.testclient import TestClient
from scipy import stats
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.jobs.models import Job
from service.studies import progress
from service.studies.answer import NO_GAIN
from service.studies.models import Trial
from service.studies.roles import confirm_seed
from tests.service.helpers import jobs_of, run_trial

SEARCH = {"family": "cosine", "dataset": "digits", "epochs": 3, "n_trials": 4}
COSINE = {"peak_lr": 0.1}


def submit(client: TestClient, **overrides: Any) -> dict[str, Any]:
    r = client.post("/v1/studies", json={**SEARCH, **overrides})
    assert r.status_code == 201, r.text
    return dict(r.json())


def rows(engine: Engine, sid: str) -> list[Trial]:
    with Session(engine) as s:
        return list(s.scalars(select(Trial).where(Trial.study_id == sid).order_by(Trial.slot)))


def done(engine: Engine, sid: str, slot: int) -> None:
    """The job's end, as the worker records it with the trial's."""
    with Session(engine) as s, s.begin():
        s.execute(update(Job).where(Job.study_id == sid, Job.slot == slot).values(state="done"))


def test_the_baseline_is_on_by_default_with_a_quarter_of_the_trials(client: TestClient,
                                                                     engine: Engine) -> None:
    study = submit(client, n_trials=12)
    assert study["n_trials"] == 12 and study["n_slots"] == 15 and study["phase"] == "search"
    assert study["counts"]["queued"] == 15 and len(jobs_of(engine, study["id"])) == 15
    stored = client.get(f"/v1/studies/{study['id']}").json()["request"]
    assert "baseline" not in stored  # the request as submitted; the spec holds the resolution
    small = submit(client, n_trials=3)  # at least 2
    assert small["n_slots"] == 5
    explicit = submit(client, baseline={"trials": 5})
    assert explicit["n_slots"] == 9


def test_no_baseline_when_off_or_when_the_study_searches_constant(client: TestClient) -> None:
    assert submit(client, baseline={"enabled": False})["n_slots"] == 4
    assert submit(client, family=None, families=["cosine", "constant"])["n_slots"] == 4
    # asked for explicitly, it runs even then (in its own Optuna study)
    assert submit(client, family="constant", baseline={"trials": 2})["n_slots"] == 6


@pytest.mark.parametrize(("body", "field", "value"), [
    ({"baseline": {"trials": 0}}, "baseline.trials", "0"),
    ({"baseline": {"search_space": {"lr": {"low": 0.5, "high": 0.1}}}},
     "baseline.search_space", "0.5"),
    ({"baseline": {"search_space": {"peak_lr": {"low": 0.1, "high": 0.5}}}},
     "baseline.search_space", "peak_lr"),
    ({"baseline": {"enable": False}}, "enable", "enable"),
    ({"confirm": {"top_k": 0}}, "top_k", "0"),
    ({"confirm": {"seeds": 1}}, "seeds", "1"),
    ({"confirm": {"top_k": 20, "seeds": 20}}, "confirm", "420"),
    ({"baseline": {"trials": 1001}}, "baseline.trials", "1001"),
])
def test_bad_baseline_and_confirm_settings_name_the_field(client: TestClient, body: dict[str, Any],
                                                          field: str, value: str) -> None:
    r = client.post("/v1/studies", json={**SEARCH, **body})
    assert r.status_code == 422, r.text
    assert field in r.text and value in r.text, r.text


def test_best_reports_the_gain_over_the_best_constant(client: TestClient,
                                                     engine: Engine) -> None:
    sid = submit(client, n_trials=2)["id"]  # slots 0-1 search, 2-3 baseline
    run_trial(engine, sid, 0, "cosine", COSINE, 0.90)
    run_trial(engine, sid, 1, "cosine", {"peak_lr": 0.3}, 0.95)
    run_trial(engine, sid, 2, "constant", {"lr": 0.05}, 0.91, number=0)
    run_trial(engine, sid, 3, "constant", {"lr": 0.2}, 0.93, number=1)
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == "succeeded" and study["best"]["value"] == 0.95
    assert study["counts"]["complete"] == 4  # every slot counts, the baseline's too
    best = client.get(f"/v1/studies/{sid}/best").json()
    assert best["answer"] == "single run" and best["value"] == 0.95
    assert best["confirmation"] is None
    baseline = best["baseline"]
    assert baseline["source"] == "baseline" and baseline["params"] == {"lr": 0.2}
    assert baseline["value"] == 0.93 and baseline["gain"] == pytest.approx(0.02)
    assert baseline["verdict"].startswith("the best schedule (cosine) beats the best constant")
    # Baseline numbers are their own Optuna study's: asked for by role
    one = client.get(f"/v1/studies/{sid}/trials/1", params={"role": "baseline"}).json()
    assert one["role"] == "baseline" and one["params"] == {"lr": 0.2}
    assert client.get(f"/v1/studies/{sid}/trials/1").json()["role"] == "search"


def test_when_the_constant_wins_best_says_so_plainly(client: TestClient,
                                                     engine: Engine) -> None:
    sid = submit(client, n_trials=2)["id"]
    run_trial(engine, sid, 0, "cosine", COSINE, 0.80)
    run_trial(engine, sid, 1, "cosine", COSINE, 0.85)
    run_trial(engine, sid, 2, "constant", {"lr": 0.05}, 0.91, number=0)
    run_trial(engine, sid, 3, "constant", {"lr": 0.2}, 0.60, number=1)
    best = client.get(f"/v1/studies/{sid}/best").json()
    assert best["family"] == "cosine"  # the search's answer is still a schedule ...
    assert best["baseline"]["gain"] == pytest.approx(-0.06)
    assert best["baseline"]["verdict"] == NO_GAIN  # ... and /best says it does not pay


def test_minimizing_signs_the_gain_so_positive_means_the_schedule_is_better(
        client: TestClient, engine: Engine) -> None:
    sid = submit(client, n_trials=2, objective={"metric": "val_loss",
                                                "direction": "minimize"})["id"]
    run_trial(engine, sid, 0, "cosine", COSINE, 0.30)
    run_trial(engine, sid, 1, "cosine", COSINE, 0.50)
    run_trial(engine, sid, 2, "constant", {"lr": 0.05}, 0.40, number=0)
    run_trial(engine, sid, 3, "constant", {"lr": 0.2}, 0.45, number=1)
    best = client.get(f"/v1/studies/{sid}/best").json()
    assert best["value"] == 0.30 and best["baseline"]["gain"] == pytest.approx(0.10)


def test_confirmation_is_queued_when_the_search_ends_and_best_reports_it(
        client: TestClient, engine: Engine) -> None:
    sid = submit(client, n_trials=3, baseline={"trials": 2},
                 confirm={"top_k": 2, "seeds": 3}, seed=7)["id"]
    search = [(0, {"peak_lr": 0.1}, 0.90), (1, {"peak_lr": 0.3}, 0.95),
              (2, {"peak_lr": 0.5}, 0.93)]
    for slot, params, value in search:
        run_trial(engine, sid, slot, "cosine", params, value)
        done(engine, sid, slot)
    run_trial(engine, sid, 3, "constant", {"lr": 0.05}, 0.92, number=0)
    done(engine, sid, 3)
    assert client.get(f"/v1/studies/{sid}").json()["phase"] == "search"
    run_trial(engine, sid, 4, "constant", {"lr": 0.1}, 0.89, number=1)  # the last slot ends
    done(engine, sid, 4)
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == "running" and study["phase"] == "confirm"
    assert study["n_slots"] == 5 + 3 * 3 and study["counts"]["queued"] == 9
    confirm = [t for t in rows(engine, sid) if t.role == "confirm"]
    # the top 2 schedules (slots 1 and 2), then the best constant (slot 3), 3 seeds each
    assert [(t.confirms, t.seed) for t in confirm] == [
        (source, confirm_seed(7, j)) for source in (1, 2, 3) for j in range(3)]
    assert [t.params for t in confirm[::3]] == [{"peak_lr": 0.3}, {"peak_lr": 0.5},
                                                {"lr": 0.05}]
    assert all(t.number is None and t.state == "queued" for t in confirm)
    assert sorted(j.slot for j in jobs_of(engine, sid) if j.state == "queued") == \
        list(range(5, 14))
    pending = client.get(f"/v1/studies/{sid}/best").json()
    assert pending["answer"] == "single run" and pending["confirmation"]["status"] == "running"

    # Slot 1's configuration was lucky in the search; slot 2's is better on average.
    values = {1: [0.90, 0.91, 0.92], 2: [0.94, 0.95, 0.93], 3: [0.92, 0.90, 0.91]}
    for t in confirm:
        assert t.confirms is not None
        run_trial(engine, sid, t.slot, str(t.family), dict(t.params or {}),
                  values[t.confirms][(t.slot - 5) % 3], number=None)
        done(engine, sid, t.slot)
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == "succeeded"
    assert study["best"]["trial_number"] == 1  # the search's single-run best, as Optuna's
    best = client.get(f"/v1/studies/{sid}/best").json()
    assert best["answer"] == "confirmed" and best["params"] == {"peak_lr": 0.5}
    assert best["trial_number"] == 2 and best["value"] == pytest.approx(0.94)
    assert best["search_best"]["trial_number"] == 1 and best["search_best"]["value"] == 0.95
    c = best["confirmation"]
    assert c["status"] == "finished" and c["winner"]["slot"] == 2
    by_slot = {x["slot"]: x for x in c["configurations"]}
    for slot, vals in values.items():
        assert by_slot[slot]["n"] == 3
        assert by_slot[slot]["mean"] == pytest.approx(statistics.fmean(vals))
        assert by_slot[slot]["std"] == pytest.approx(statistics.stdev(vals))
    diffs = [a - b for a, b in zip(values[2], values[3], strict=True)]  # paired by seed
    mean, sem = statistics.fmean(diffs), stats.sem(diffs)
    low, high = stats.t.interval(0.95, len(diffs) - 1, loc=mean, scale=sem)
    gain = c["gain"]
    assert gain["n"] == 3 and gain["mean"] == pytest.approx(mean)
    assert gain["ci95"] == pytest.approx([low, high])
    assert gain["constant"]["slot"] == 3
    assert ("beats the tuned constant LR" in gain["verdict"]) == (low > 0)


def test_a_budget_that_ends_the_search_skips_the_confirmation(client: TestClient,
                                                              engine: Engine) -> None:
    sid = submit(client, n_trials=3, baseline={"enabled": False},
                 confirm={"top_k": 1, "seeds": 2}, budget={"max_epochs": 3})["id"]
    run_trial(engine, sid, 0, "cosine", COSINE, 0.9, epochs=3)
    with Session(engine) as s, s.begin():  # the worker's per-epoch count, then its check
        study = progress.locked(s, sid)
        study.epochs_run = 3
    done(engine, sid, 0)
    with Session(engine) as s, s.begin():
        assert progress.stop_for_budget(s, sid) is not None
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == "succeeded" and study["phase"] == "search"
    assert study["n_slots"] == 3 and "max_epochs=3" in study["stop_reason"]
    assert [t.role for t in rows(engine, sid)] == ["search"]
    confirmation = client.get(f"/v1/studies/{sid}/best").json()["confirmation"]
    assert confirmation["status"] == "skipped" and "max_epochs=3" in confirmation["reason"]


def test_patience_ends_the_search_and_the_confirmation_still_runs(client: TestClient,
                                                                  engine: Engine) -> None:
    sid = submit(client, n_trials=5, baseline={"enabled": False},
                 confirm={"top_k": 1, "seeds": 2}, budget={"patience": 1})["id"]
    for slot, value in enumerate([0.9, 0.8]):
        run_trial(engine, sid, slot, "cosine", COSINE, value)
        done(engine, sid, slot)
        with Session(engine) as s, s.begin():
            progress.stop_for_budget(s, sid)
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["phase"] == "confirm" and study["status"] == "running"
    assert study["counts"]["cancelled"] == 3 and study["counts"]["queued"] == 2
    assert "patience=1" in study["stop_reason"]
    with Session(engine) as s, s.begin():  # patience never stops the confirmation
        assert progress.stop_for_budget(s, sid) is None


def test_the_baseline_is_queued_among_the_search_slots(client: TestClient,
                                                      engine: Engine) -> None:
    sid = submit(client, n_trials=8, baseline={"trials": 2})["id"]
    with Session(engine) as s:  # claims take a tenant's jobs by (created_at, id)
        order = list(s.scalars(select(Job.slot).where(Job.study_id == sid)
                               .order_by(Job.created_at, Job.id)))
    assert order == [0, 1, 2, 8, 3, 4, 9, 5, 6, 7]


def test_patience_stops_the_search_but_not_the_baseline(client: TestClient,
                                                        engine: Engine) -> None:
    sid = submit(client, n_trials=4, baseline={"trials": 2}, budget={"patience": 1})["id"]
    for slot, value in enumerate([0.9, 0.8]):
        run_trial(engine, sid, slot, "cosine", COSINE, value)
        done(engine, sid, slot)
        with Session(engine) as s, s.begin():
            progress.stop_for_budget(s, sid)
    states = {j.slot: j.state for j in jobs_of(engine, sid)}
    assert states == {0: "done", 1: "done", 2: "cancelled", 3: "cancelled", 4: "queued",
                      5: "queued"}
    for slot, number in ((4, 0), (5, 1)):
        run_trial(engine, sid, slot, "constant", {"lr": 0.1}, 0.85, number=number)
        done(engine, sid, slot)
    best = client.get(f"/v1/studies/{sid}/best").json()
    assert best["baseline"]["gain"] == pytest.approx(0.05)
    assert client.get(f"/v1/studies/{sid}").json()["status"] == "succeeded"


def confirming(client: TestClient, engine: Engine, **overrides: Any) -> str:
    """A study in its confirm phase: 2 search trials and 2 baseline trials ended, 1 schedule
    and the constant queued for 2 seeds each (slots 4-7)."""
    sid = submit(client, **{"n_trials": 2, "baseline": {"trials": 2},
                            "confirm": {"top_k": 1, "seeds": 2}, **overrides})["id"]
    for slot, family, params, value, number in (
            (0, "cosine", COSINE, 0.9, 0), (1, "cosine", {"peak_lr": 0.2}, 0.8, 1),
            (2, "constant", {"lr": 0.1}, 0.85, 0), (3, "constant", {"lr": 0.2}, 0.7, 1)):
        run_trial(engine, sid, slot, family, params, value, number=number)
        done(engine, sid, slot)
    assert client.get(f"/v1/studies/{sid}").json()["phase"] == "confirm"
    return sid


def test_cancel_during_the_confirmation_ends_its_queued_runs(client: TestClient,
                                                             engine: Engine) -> None:
    sid = confirming(client, engine)
    run_trial(engine, sid, 4, "cosine", COSINE, 0.91, number=None)
    done(engine, sid, 4)
    assert client.post(f"/v1/studies/{sid}/cancel").status_code == 200
    assert {t.slot: t.state for t in rows(engine, sid) if t.role == "confirm"} == {
        4: "complete", 5: "cancelled", 6: "cancelled", 7: "cancelled"}
    c = client.get(f"/v1/studies/{sid}/best").json()["confirmation"]
    assert c["status"] == "stopped" and c["winner"] is None  # no configuration ran whole


def test_a_run_that_failed_keeps_its_configuration_from_winning(client: TestClient,
                                                                engine: Engine) -> None:
    sid = confirming(client, engine, confirm={"top_k": 2, "seeds": 2})
    values = {4: 0.99, 5: None, 6: 0.91, 7: 0.92, 8: 0.85, 9: 0.86}  # slot 5 diverged
    for t in (t for t in rows(engine, sid) if t.role == "confirm"):
        value = values[t.slot]
        run_trial(engine, sid, t.slot, str(t.family), dict(t.params or {}), value,
                  number=None, state="complete" if value is not None else "failed",
                  reason=None if value is not None else "diverged: loss is nan")
        done(engine, sid, t.slot)
    best = client.get(f"/v1/studies/{sid}/best").json()
    c = best["confirmation"]
    assert c["status"] == "finished" and best["answer"] == "confirmed"
    assert c["winner"]["params"] == {"peak_lr": 0.2}  # not peak_lr 0.1's one lucky 0.99
    assert best["params"] == {"peak_lr": 0.2} and best["value"] == pytest.approx(0.915)
    assert best["verdict"] == c["gain"]["verdict"]  # the confirmation's is the conclusion


def test_fail_fast_during_the_confirmation_ends_the_study(client: TestClient,
                                                          engine: Engine) -> None:
    sid = confirming(client, engine)
    run_trial(engine, sid, 4, "cosine", COSINE, None, number=None, state="failed",
              reason="dataset_changed: the files changed")
    done(engine, sid, 4)
    with Session(engine) as s, s.begin():  # what the worker does after such a failure
        progress.fail_fast(s, sid, "dataset changed since registration")
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == "succeeded" and study["counts"]["queued"] == 0
    assert study["stop_reason"] == "stopped early: dataset changed since registration"


def test_fail_fast_during_the_search_starts_no_confirmation(client: TestClient,
                                                            engine: Engine) -> None:
    sid = submit(client, n_trials=3, baseline={"enabled": False},
                 confirm={"top_k": 1, "seeds": 2})["id"]
    run_trial(engine, sid, 0, "cosine", COSINE, 0.9)
    done(engine, sid, 0)
    run_trial(engine, sid, 1, "cosine", COSINE, None, state="failed", reason="dataset_changed")
    done(engine, sid, 1)
    with Session(engine) as s, s.begin():
        progress.fail_fast(s, sid, "dataset changed since registration")
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == "succeeded" and study["phase"] == "ended"
    assert study["n_slots"] == 3 and study["counts"]["cancelled"] == 1
    assert client.get(f"/v1/studies/{sid}/best").json()["confirmation"]["status"] == "skipped"


def test_a_lost_baseline_attempt_is_failed_in_the_baselines_optuna_study(
        client: TestClient, engine: Engine) -> None:
    from datetime import timedelta

    from service.db import db_now
    from service.jobs import ops as jobs

    sid = submit(client, n_trials=2, baseline={"trials": 2})["id"]
    with Session(engine) as s, s.begin():
        study = progress.locked(s, sid)
        for slot in (0, 2):  # search trial 0 and baseline trial 0 run at once
            progress.start_trial(s, study, slot=slot, number=0, family="cosine",
                                 params=COSINE, steps_per_epoch=1, worker="w")
        s.execute(update(Job).where(Job.study_id == sid, Job.slot.in_((0, 2))).values(
            state="running", attempt=1, lease_owner="w",
            lease_expires_at=db_now(s) - timedelta(seconds=60)))
    with Session(engine) as s, s.begin():
        lost = jobs.reap(s, max_attempts=3)
    name = client.get(f"/v1/studies/{sid}").json()["optuna_study_name"]
    assert sorted(lost) == [(name, 0), (name + ".baseline", 0)]


def test_with_baseline_confirmation_and_budget_off_a_study_runs_as_before(
        client: TestClient, engine: Engine) -> None:
    study = submit(client, n_trials=2, baseline={"enabled": False})
    sid = study["id"]
    assert study["n_slots"] == 2 and len(jobs_of(engine, sid)) == 2
    for slot, value in enumerate([0.9, 0.95]):
        run_trial(engine, sid, slot, "cosine", COSINE, value)
        done(engine, sid, slot)
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == "succeeded" and study["phase"] == "search"
    assert study["stop_reason"] is None and study["counts"]["complete"] == 2
    assert [t.role for t in rows(engine, sid)] == ["search", "search"]
    best = client.get(f"/v1/studies/{sid}/best").json()
    assert best["answer"] == "single run" and best["value"] == 0.95
    assert best["baseline"] is None and best["confirmation"] is None
    assert best["verdict"] is None and best["search_best"]["trial_number"] == 1
