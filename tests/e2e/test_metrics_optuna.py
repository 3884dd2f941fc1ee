"""Operations: /metrics parses with Prometheus' own text parser and its counters move when a
study runs; Optuna's own tools (optuna.load_study, optuna-dashboard) read our Optuna storage."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import optuna
from prometheus_client.parser import text_string_to_metric_families

from lrsearch.schedules.search import FAMILY_PARAM
from tests.e2e.conftest import Server
from tests.processes import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: Server) -> Samples:
    with server.client() as c:
        text = c.metrics()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def idle(server: Server) -> Samples:
    """A scrape taken when no job is queued or running (so deltas are this test's own)."""
    deadline = time.monotonic() + 120
    while True:
        samples = scrape(server)
        busy = sum(value(samples, "lrsearch_jobs", kind=k, state=s)
                   for k in ("trial", "range_test") for s in ("queued", "running"))
        if busy == 0:
            return samples
        assert time.monotonic() < deadline, "the queue never drained"
        time.sleep(0.5)


def test_metrics_parse_and_move_when_a_study_runs(server: Server) -> None:
    before = idle(server)
    with server.client() as c:
        study = c.submit({"family": "constant", "dataset": "digits", "epochs": 2,
                          "batch_size": 64, "n_trials": 2, "pruner": {"name": "none"}})
        assert c.wait(study["id"], timeout=300, poll=0.3)["status"] == "succeeded"
        c.study(study["id"])
    after = idle(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("lrsearch_trials_finished_total", state="complete") == 2
    assert delta("lrsearch_jobs", kind="trial", state="done") == 2
    assert delta("lrsearch_studies", status="succeeded") == 1
    assert delta("lrsearch_trial_duration_seconds_count") == 2
    assert delta("lrsearch_trial_duration_seconds_sum") > 0
    assert delta("lrsearch_trial_duration_seconds_bucket", le="+Inf") == 2
    assert value(after, "lrsearch_workers_alive") == 1  # serve's one worker
    polls = value(after, "lrsearch_http_request_duration_seconds_count", method="GET",
                  route="/v1/studies/{study_id}", status="200")
    assert polls > value(before, "lrsearch_http_request_duration_seconds_count", method="GET",
                         route="/v1/studies/{study_id}", status="200")


def test_optuna_load_study_sees_our_trials(server: Server,
                                           finished_study: dict[str, Any]) -> None:
    storage = f"sqlite:///{server.folder / '.lrsearch' / 'optuna.db'}"
    loaded = optuna.load_study(study_name=finished_study["optuna_study_name"], storage=storage)
    with server.client() as c:
        ours = {t["number"]: t for t in c.all_trials(finished_study["id"])}
    complete = {t.number: t for t in loaded.trials
                if t.state == optuna.trial.TrialState.COMPLETE}
    assert set(complete) == {n for n, t in ours.items() if t["state"] == "complete"}
    for number, trial in complete.items():
        assert trial.value == ours[number]["value"]
        family = ours[number]["family"]
        assert trial.params[FAMILY_PARAM] == family  # a cross-family study samples the family
        for name, v in ours[number]["params"].items():
            if f"{family}.{name}" in trial.params:
                assert trial.params[f"{family}.{name}"] == v
    assert loaded.best_value == finished_study["best"]["value"]


def test_optuna_dashboard_serves_our_storage(server: Server, finished_study: dict[str, Any],
                                             tmp_path: Path) -> None:
    """The README's `optuna-dashboard <storage URL>` command, run for real."""
    port = free_port()
    storage = f"sqlite:///{server.folder / '.lrsearch' / 'optuna.db'}"
    program = str(Path(sys.executable).with_name("optuna-dashboard"))
    dashboard = subprocess.Popen([program, storage, "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=server.env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/api/studies", timeout=5).json()
                break
            except httpx.TransportError:
                assert dashboard.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)
        names = {s["study_name"] for s in body["study_summaries"]}
        assert finished_study["optuna_study_name"] in names
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
