"""/v1/studies: submission, validation of every bad input, idempotency, lifecycle."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.jobs.models import Job
from service.studies import progress
from service.studies.models import Study
from tests.service.helpers import STUDY, count, jobs_of, run_trial


def test_submit_creates_the_study_and_one_job_per_trial_slot(client: TestClient,
                                                             engine: Engine) -> None:
    r = client.post("/v1/studies", json={**STUDY, "name": "first"})
    assert r.status_code == 201, r.text
    study = r.json()
    assert study["status"] == "queued" and study["families"] == ["one_cycle"]
    assert study["counts"]["queued"] == 3 and study["best"] is None
    assert study["request"]["name"] == "first"
    jobs = jobs_of(engine, study["id"])
    assert [j.slot for j in jobs] == [0, 1, 2] and {j.state for j in jobs} == {"queued"}
    assert client.get(f"/v1/studies/{study['id']}").json()["id"] == study["id"]


BAD: list[tuple[dict[str, Any], str]] = [
    ({"family": "nope"}, "nope"),
    ({"family": None, "families": ["constant", "nope"]}, "nope"),
    ({"family": None, "families": ["constant", "constant"]}, "families"),
    ({"family": None}, "family"),
    ({"families": ["constant"]}, "family"),
    ({"dataset": "nope"}, "nope"),
    ({"dataset": "mnist"}, "mnist.npz"),
    ({"model": {"name": "nope"}}, "nope"),
    ({"model": {"name": "mlp", "params": {"layers": 3}}}, "layers"),
    ({"model": {"name": "resnet50"}}, "32x32"),
    ({"optimizer": {"name": "lion"}}, "lion"),
    ({"optimizer": {"name": "sgd", "params": {"decay": 0.1}}}, "decay"),
    ({"optimizer": {"name": "momentum", "params": {"momentum": 2}}}, "momentum"),
    ({"search_space": {"one_cycle": {"maxlr": {"value": 0.1}}}}, "maxlr"),
    ({"search_space": {"one_cycle": {"max_lr": {"low": -1, "high": 1}}}}, "max_lr"),
    ({"search_space": {"one_cycle": {"pct_start": {"low": 0.1, "high": 1.5}}}}, "pct_start"),
    ({"search_space": {"one_cycle": {"max_lr": {"low": 0.5, "high": 0.1}}}}, "low must be < high"),
    ({"search_space": {"cosine": {}}}, "cosine"),
    ({"family": "cosine", "search_space": {"cosine": {"warmup_epochs": {"value": 5}}}},
     "warmup_epochs"),
    ({"epochs": 101}, "epochs"),
    ({"n_trials": 51}, "n_trials"),
    ({"batch_size": 5000}, "batch_size"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": 2**40}, "epochs"),
    ({"bogus": 1}, "bogus"),
    ({"sampler": {"name": "anneal"}}, "sampler"),
    ({"pruner": {"name": "patient"}}, "pruner"),
    ({"metric": "f1"}, "metric"),
    ({"range_test_id": "0" * 32}, "0" * 32),
    ({"name": "x\x00y"}, "NUL"),
    ({"name": "x" * 201}, "name"),
    ({"dataset": "d" * 65}, "dataset"),
    ({"seed": 2**31}, "seed"),
    ({"sampler": {"name": "tpe", "seed": -1}}, "seed"),
    ({"model": {"name": "m" * 65}}, "model"),
]


@pytest.mark.parametrize("change,named", BAD)
def test_bad_input_is_rejected_with_the_field_named_and_nothing_stored(
        client: TestClient, engine: Engine, change: dict[str, Any], named: str) -> None:
    body = {**STUDY, **change}
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 422, r.text
    data = r.json()
    assert set(data) >= {"type", "detail"}
    assert named in data["detail"] or named in str(data.get("errors")), data
    assert count(engine, Study) == 0 and count(engine, Job) == 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_rejected(client: TestClient, engine: Engine,
                                         literal: str) -> None:
    raw = ('{"family": "one_cycle", "dataset": "digits", "epochs": 5, "n_trials": 2, '
           '"search_space": {"one_cycle": {"max_lr": {"value": ' + literal + '}}}}')
    r = client.post("/v1/studies", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite" in r.json()["detail"]
    assert "search_space.one_cycle.max_lr.value" in r.json()["detail"]
    assert count(engine, Study) == 0


def test_oversized_body_is_413(client: TestClient, engine: Engine) -> None:
    r = client.post("/v1/studies", json={**STUDY, "name": "x" * 300_000})
    assert r.status_code == 413 and r.json()["type"] == "too_large"
    assert count(engine, Study) == 0


def test_idempotency_key_returns_the_same_study_and_no_second_job(client: TestClient,
                                                                  engine: Engine) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    first = client.post("/v1/studies", json=STUDY, headers=headers)
    again = client.post("/v1/studies", json=STUDY, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert count(engine, Study) == 1 and count(engine, Job) == 3
    other = client.post("/v1/studies", json={**STUDY, "epochs": 6}, headers=headers)
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    assert client.post("/v1/studies", json=STUDY).json()["id"] != first.json()["id"]


def test_list_paginates_and_filters_by_status(client: TestClient) -> None:
    ids = [client.post("/v1/studies", json=STUDY).json()["id"] for _ in range(3)]
    client.post(f"/v1/studies/{ids[0]}/cancel")
    page = client.get("/v1/studies", params={"limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    assert page["items"][0]["id"] == ids[2]  # newest first
    cancelled = client.get("/v1/studies", params={"status": "cancelled"}).json()
    assert [s["id"] for s in cancelled["items"]] == [ids[0]]
    assert client.get("/v1/studies", params={"status": "sleeping"}).status_code == 422


def test_cancel_then_delete(client: TestClient, engine: Engine) -> None:
    sid = client.post("/v1/studies", json=STUDY).json()["id"]
    assert client.delete(f"/v1/studies/{sid}").status_code == 409  # not finished yet
    r = client.post(f"/v1/studies/{sid}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["counts"]["cancelled"] == 3 and r.json()["counts"]["queued"] == 0
    assert {j.state for j in jobs_of(engine, sid)} == {"cancelled"}
    again = client.post(f"/v1/studies/{sid}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    assert client.delete(f"/v1/studies/{sid}").status_code == 204
    assert client.get(f"/v1/studies/{sid}").status_code == 404
    assert count(engine, Job) == 0


def test_cancel_flags_running_jobs(client: TestClient, engine: Engine) -> None:
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    sid = client.post("/v1/studies", json=STUDY).json()["id"]
    with Session(engine) as s, s.begin():
        s.execute(update(Job).where(Job.study_id == sid, Job.slot == 0).values(state="running"))
    client.post(f"/v1/studies/{sid}/cancel")
    jobs = jobs_of(engine, sid)
    assert jobs[0].state == "running" and jobs[0].cancel_requested
    assert [j.state for j in jobs[1:]] == ["cancelled", "cancelled"]


def test_unknown_ids_are_404(client: TestClient) -> None:
    for path in ("/v1/studies/nope", "/v1/studies/nope/best", "/v1/studies/nope/trials",
                 "/v1/studies/nope/trials/0"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["type"] == "not_found", path
    assert client.post("/v1/studies/nope/cancel").status_code == 404
    assert client.delete("/v1/studies/nope").status_code == 404


def test_trials_and_live_history(client: TestClient, engine: Engine) -> None:
    sid = client.post("/v1/studies", json=STUDY).json()["id"]
    assert client.get(f"/v1/studies/{sid}/best").status_code == 404  # nothing completed
    run_trial(engine, sid, 0, "one_cycle", {"max_lr": 0.1}, 0.8)
    run_trial(engine, sid, 1, "one_cycle", {"max_lr": 1.0}, None, state="failed",
              reason="diverged: the loss became nan in epoch 0")
    trials = client.get(f"/v1/studies/{sid}/trials").json()
    assert trials["total"] == 2
    assert trials["items"][1]["failure_reason"].startswith("diverged")
    assert trials["items"][1]["value"] is None
    one = client.get(f"/v1/studies/{sid}/trials/0").json()
    assert len(one["history"]) == 3
    assert one["history"][0]["metrics"] == pytest.approx(
        {"loss": 1.0, "val_loss": 1.1, "accuracy": 0.5, "val_accuracy": 0.4})
    # The deprecated aliases (removed in lrsearch 2.0) repeat them under the old names.
    assert (one["history"][0]["loss"], one["history"][0]["val_loss"],
            one["history"][0]["metric"], one["history"][0]["val_metric"]) == pytest.approx(
        (1.0, 1.1, 0.5, 0.4))
    study = client.get(f"/v1/studies/{sid}").json()
    assert study["status"] == "running"
    assert study["counts"] == {"queued": 1, "running": 0, "complete": 1, "pruned": 0,
                               "failed": 1, "cancelled": 0, "finished": 2}
    assert study["best"]["value"] == 0.8 and study["best"]["trial_number"] == 0
    run_trial(engine, sid, 2, "one_cycle", {"max_lr": 0.3}, 0.9)
    done = client.get(f"/v1/studies/{sid}").json()
    assert done["status"] == "succeeded" and done["best"]["trial_number"] == 2


def test_overlong_idempotency_key_and_out_of_range_path_integers(client: TestClient,
                                                                 engine: Engine) -> None:
    r = client.post("/v1/studies", json=STUDY, headers={"Idempotency-Key": "k" * 201})
    assert r.status_code == 422 and "Idempotency-Key" in str(r.json())
    assert count(engine, Study) == 0
    sid = client.post("/v1/studies", json=STUDY).json()["id"]
    r = client.get(f"/v1/studies/{sid}/trials/{2**40}")
    assert r.status_code == 422 and "number" in str(r.json())
    r = client.get("/v1/studies", params={"offset": 2**40})
    assert r.status_code == 422 and "offset" in str(r.json())


def test_every_logged_metric_is_stored_and_shown(client: TestClient, engine: Engine) -> None:
    """Whatever Keras logged reaches the API, the page and the plot under its own name; a
    non-finite value is null; a record without `metrics` is refused, naming it."""
    sid = client.post("/v1/studies", json={**STUDY, "n_trials": 1}).json()["id"]
    logged = [{"loss": 0.9, "mae": 0.5, "val_loss": 1.0, "val_mae": 0.6, "val_auc": 0.7},
              {"loss": 0.7, "mae": 0.4, "val_loss": float("nan"), "val_mae": 0.5,
               "val_auc": float("inf")}]
    with Session(engine) as s, s.begin():
        study = s.get(Study, sid)
        assert study is not None
        trial = progress.start_trial(s, study, slot=0, number=0, family="one_cycle",
                                     params={"max_lr": 0.1}, steps_per_epoch=7, worker="t")
        for e, metrics in enumerate(logged):
            progress.add_epoch(s, trial, {"epoch": e, "lr_first": 0.1, "lr_last": 0.05,
                                          "seconds": 0.5, "metrics": metrics})
        with pytest.raises(ValueError, match="metrics"):
            progress.add_epoch(s, trial, {"epoch": 2, "lr_first": 0.1, "lr_last": 0.05,
                                          "seconds": 0.5, "loss": 0.5})
        progress.finish_trial(s, study, trial, "complete", 0.8)
    history = client.get(f"/v1/studies/{sid}/trials/0").json()["history"]
    assert history[0]["metrics"] == pytest.approx(logged[0])
    assert history[1]["metrics"] == pytest.approx(
        {"loss": 0.7, "mae": 0.4, "val_loss": None, "val_mae": 0.5, "val_auc": None})
    assert history[1]["metric"] is None and history[1]["val_loss"] is None  # aliases
    page = client.get(f"/ui/studies/{sid}").text
    header = page.split("<h3>Its epochs</h3>")[1].split("</tr>")[0]
    assert [h.split("</th>")[0] for h in header.split("<th>")[1:]] == [
        "Epoch", "LR first", "LR last", "loss", "val_loss", "val_auc", "mae", "val_mae",
        "Seconds"]  # loss first, then by name, each metric before its val_ twin
    assert client.get(f"/v1/studies/{sid}/plots/lr_curves.png").status_code == 200
