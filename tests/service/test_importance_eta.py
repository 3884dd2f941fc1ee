"""Parameter importance per family (Optuna's fANOVA over our own trial rows), the parameter
plots, and the ETA (service/studies/eta.py) on the API, the pages and `lrsearch wait`.

Trials are recorded through the service's own functions (progress.start_trial, add_epoch,
finish_trial), as a worker records them; no training runs."""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import httpx
import matplotlib.image
import numpy as np
import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.distributions import BaseDistribution, FloatDistribution
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from lrsearch.cli.output import progress_line
from lrsearch.client import PLOT_KINDS, Client
from lrsearch.durations import duration_text
from service.config import Settings
from service.db import utcnow
from service.studies import eta, importance, progress
from service.studies.models import Study, Trial
from service.studies.plots import PlotKind
from tests.processes import LRSEARCH, free_port, wait_ready
from tests.service.helpers import run_trial

# Three families: cosine with two searched parameters (the others fixed), constant with one,
# linear with none (its lr0 fixed, end_lr has no search range).
CROSS: dict[str, Any] = {
    "families": ["cosine", "constant", "linear"], "dataset": "digits", "epochs": 5,
    "n_trials": 9, "baseline": {"enabled": False},
    "search_space": {
        "cosine": {"peak_lr": {"low": 0.001, "high": 1.0, "log": True},
                   "alpha": {"low": 0.0, "high": 0.2}, "warmup_epochs": {"value": 0.0}},
        "constant": {"lr": {"low": 0.01, "high": 0.5}},
        "linear": {"lr0": {"value": 0.1}}}}
# What those overrides mean to Optuna, written out here rather than derived by the code
# under test.
COSINE_SPACE: dict[str, BaseDistribution] = {
    "peak_lr": FloatDistribution(0.001, 1.0, log=True), "alpha": FloatDistribution(0.0, 0.2)}
COSINE_TRIALS = [({"peak_lr": 0.003, "alpha": 0.01}, 0.41),
                 ({"peak_lr": 0.02, "alpha": 0.15}, 0.55),
                 ({"peak_lr": 0.1, "alpha": 0.05}, 0.78),
                 ({"peak_lr": 0.4, "alpha": 0.19}, 0.71),
                 ({"peak_lr": 0.9, "alpha": 0.1}, 0.32)]
FIXED = {"warmup_epochs": 0.0, "warmup_start_lr": 0.0}


def submit(client: TestClient, body: dict[str, Any]) -> str:
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def record_cross_family(engine: Engine, sid: str) -> None:
    """cosine: 5 complete trials, a pruned and a failed one; constant: 1 complete; linear: 1
    complete (a fixed schedule)."""
    for slot, (params, value) in enumerate(COSINE_TRIALS):
        run_trial(engine, sid, slot, "cosine", {**params, **FIXED}, value)
    run_trial(engine, sid, 5, "cosine", {"peak_lr": 0.7, "alpha": 0.02, **FIXED}, None,
              state="pruned", reason="pruned after epoch 1")
    run_trial(engine, sid, 6, "cosine", {"peak_lr": 0.95, "alpha": 0.12, **FIXED}, None,
              state="failed", reason="diverged: the loss became nan in epoch 0")
    run_trial(engine, sid, 7, "constant", {"lr": 0.05}, 0.6)
    run_trial(engine, sid, 8, "linear", {"lr0": 0.1, "end_lr": 0.0}, 0.5)


def direct_importance(trials: list[tuple[dict[str, Any], float]]) -> dict[str, float]:
    """Optuna's own answer on the same trials: a study built by hand, fANOVA seeded as the
    service seeds it."""
    study = optuna.create_study(direction="maximize")
    study.add_trials([optuna.trial.create_trial(params=p, distributions=COSINE_SPACE, value=v)
                      for p, v in trials])
    found = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=importance.SEED))
    return {k: float(v) for k, v in found.items()}


def assert_png(data: bytes, least: tuple[int, int] = (200, 200)) -> np.ndarray:
    """A decodable, non-blank PNG at least `least` (height, width) pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
    assert pixels.shape[0] >= least[0] and pixels.shape[1] >= least[1], pixels.shape
    assert float(np.std(pixels)) > 0.01, "blank image"
    return pixels


def test_importance_per_family_matches_optuna_and_says_why_a_family_has_none(
        client: TestClient, engine: Engine) -> None:
    sid = submit(client, CROSS)
    record_cross_family(engine, sid)
    r = client.get(f"/v1/studies/{sid}/importance")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["evaluator"] == "fanova" and body["seed"] == importance.SEED
    assert list(body["importances"]) == ["cosine"]
    got = body["importances"]["cosine"]
    expected = direct_importance(COSINE_TRIALS)  # the pruned and failed trials do not count
    assert list(got) == list(expected)  # largest first
    assert got == pytest.approx(expected, rel=1e-9)
    assert sum(got.values()) == pytest.approx(1.0)
    assert body["trials"] == {"cosine": 5} and body["complete"] == {
        "cosine": 5, "constant": 1, "linear": 1}
    reasons = body["reasons"]
    assert set(reasons) == {"constant", "linear"}
    assert "1 complete search trial" in reasons["constant"] and "at least 2" in reasons["constant"]
    assert "no searched parameter" in reasons["linear"] and "`linear`" in reasons["linear"]
    # The same trials give the same numbers (the evaluator is seeded; nothing is cached across
    # computations here).
    with Session(engine) as s:
        study = s.get(Study, sid)
        assert study is not None
        assert importance.compute(s, study).importances["cosine"] == got


def test_a_family_whose_values_do_not_vary_has_a_reason(client: TestClient,
                                                        engine: Engine) -> None:
    sid = submit(client, {**CROSS, "families": ["cosine"], "n_trials": 3,
                          "search_space": {"cosine": CROSS["search_space"]["cosine"]}})
    for slot, (params, _) in enumerate(COSINE_TRIALS[:3]):
        run_trial(engine, sid, slot, "cosine", {**params, **FIXED}, 0.5)
    body = client.get(f"/v1/studies/{sid}/importance").json()
    assert body["importances"] == {}
    assert "same value" in body["reasons"]["cosine"]


def test_importance_before_any_trial_and_of_an_unknown_study(client: TestClient) -> None:
    sid = submit(client, CROSS)
    body = client.get(f"/v1/studies/{sid}/importance").json()
    assert body["importances"] == {} and "0 complete search trials" in body["reasons"]["cosine"]
    assert client.get("/v1/studies/nope/importance").status_code == 404
    # The plots draw what there is: a message, not an error.
    assert_png(client.get(f"/v1/studies/{sid}/plots/importance.png").content)
    assert_png(client.get(f"/v1/studies/{sid}/plots/params.png").content)


def test_the_client_offers_every_plot_kind_the_server_draws() -> None:
    assert set(PLOT_KINDS) == set(get_args(PlotKind))


def test_evenly_keeps_the_ends_and_at_most_the_cap() -> None:
    items = list(range(1000))
    picked = importance.evenly(items, 200)
    assert len(picked) == 200 and picked[0] == 0 and picked[-1] == 999
    assert picked == sorted(set(picked))
    assert importance.evenly(items[:5], 200) == items[:5]


def test_importance_and_parameter_plots_render(client: TestClient, engine: Engine) -> None:
    sid = submit(client, CROSS)
    record_cross_family(engine, sid)
    for prefix in ("/v1", "/ui"):
        for kind in ("importance", "params"):
            r = client.get(f"{prefix}/studies/{sid}/plots/{kind}.png")
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
            assert_png(r.content)
    # The params grid has a row of panels per family with a searched parameter and trials
    # (cosine, constant; not linear): two rows, about 600 pixels.
    params = assert_png(client.get(f"/v1/studies/{sid}/plots/params.png").content)
    assert params.shape[0] > 400
    # Only the kinds PlotKind lists reach the drawing code.
    for kind in ("importances", "params..", "..%2Fimportance", "PARAMS", "params%00"):
        r = client.get(f"/v1/studies/{sid}/plots/{kind}.png")
        assert r.status_code in (404, 422), (kind, r.status_code)
    r = client.get(f"/v1/studies/{sid}/plots/bogus.png")
    assert r.status_code == 422 and "kind" in r.text and "importance" in r.text


def test_study_page_shows_the_importance_section_only_with_enough_trials(
        client: TestClient, engine: Engine) -> None:
    sid = submit(client, CROSS)
    page = client.get(f"/ui/studies/{sid}").text
    assert '<h2 id="parameters">Parameters</h2>' in page
    assert "No parameter importance or parameter plots yet: cosine: 0 complete search trials" \
        in page
    assert "plots/importance.png" not in page and "plots/params.png" not in page
    record_cross_family(engine, sid)
    page = client.get(f"/ui/studies/{sid}").text
    section = page.split('<h2 id="parameters">')[1].split("<h2>Trials")[0]
    assert "plots/importance.png" in section and "plots/params.png" in section
    expected = direct_importance(COSINE_TRIALS)
    for name, value in expected.items():
        assert f"<td>cosine</td><td>{name}</td><td class=\"num\">{value:.3f}</td>" in section
    assert "constant: no importance: 1 complete search trial" in section
    assert "linear: no importance: no searched parameter" in section
    # The section comes after the study's other plots.
    assert page.index("plots/history.png") < page.index('<h2 id="parameters">')


# -- ETA ------------------------------------------------------------------------------------


def test_eta_formula() -> None:
    # D = 10 s; running 4 s and 6 s (6 s and 4 s left); 4 queued; 2 at once:
    # (4 * 10 + 6 + 4) / 2 = 25 s.
    assert eta.estimate(10.0, [4.0, 6.0], 4) == pytest.approx(25.0)
    assert eta.estimate(10.0, [4.0, 6.0], 4, parallel=2) == pytest.approx(25.0)
    assert eta.estimate(10.0, [4.0, 6.0], 4, parallel=1) == pytest.approx(50.0)
    # A running trial past the mean has nothing left; nothing running still means one worker.
    assert eta.estimate(10.0, [15.0], 0) == 0.0
    assert eta.estimate(10.0, [], 3) == pytest.approx(30.0)
    assert eta.estimate(None, [4.0], 4) is None


def test_eta_on_the_api_the_pages_and_the_progress_line(client: TestClient,
                                                        engine: Engine) -> None:
    sid = submit(client, {**CROSS, "families": ["constant"], "n_trials": 10,
                          "search_space": {"constant": CROSS["search_space"]["constant"]}})
    assert client.get(f"/v1/studies/{sid}").json()["eta_seconds"] is None  # nothing ran yet
    with Session(engine) as s, s.begin():  # a running trial, none finished: still None
        study = progress.locked(s, sid)
        progress.start_trial(s, study, slot=0, number=0, family="constant", params={"lr": 0.1},
                             steps_per_epoch=7, worker="w0")
    assert client.get(f"/v1/studies/{sid}").json()["eta_seconds"] is None
    set_up_eta_example(engine, sid)
    shown = client.get(f"/v1/studies/{sid}").json()
    assert shown["counts"]["queued"] == 4 and shown["counts"]["running"] == 2
    # The running trials' elapsed time grows while the test runs: 25 s, less that much.
    assert shown["eta_seconds"] == pytest.approx(25.0, abs=1.0)
    listed = client.get("/v1/studies").json()["items"]
    assert listed[0]["eta_seconds"] == pytest.approx(25.0, abs=1.0)
    page = client.get(f"/ui/studies/{sid}").text
    assert 'Estimated time left: about <b>' in page and "shared by the 2 trials" in page
    eta_shown = page.split('Estimated time left: about <b>')[1].split("</b>")[0]
    assert eta_shown in ("24 s", "25 s"), eta_shown
    index = client.get("/ui").text
    assert "<th>ETA</th>" in index and f'<td class="num">{eta_shown}</td>' in index
    assert progress_line(shown).endswith(f", ETA about {eta_shown}")
    # A time budget caps it.
    with Session(engine) as s, s.begin():
        study = progress.locked(s, sid)
        study.spec = {**study.spec, "budget": {"max_seconds": 100}}
        study.started_at = utcnow() - timedelta(seconds=95)
    assert client.get(f"/v1/studies/{sid}").json()["eta_seconds"] == pytest.approx(5.0, abs=1.0)


def set_up_eta_example(engine: Engine, sid: str) -> None:
    """The docstring's example on a 10-slot study whose slot 0 is running: 4 trials finished
    in 10 s each, 2 running for 4 s and 6 s, 4 slots queued."""
    for slot in range(1, 5):
        run_trial(engine, sid, slot, "constant", {"lr": 0.05 * slot}, 0.5 + slot / 100)
    with Session(engine) as s, s.begin():
        study = progress.locked(s, sid)
        progress.start_trial(s, study, slot=5, number=5, family="constant", params={"lr": 0.3},
                             steps_per_epoch=7, worker="w1")
        s.execute(update(Trial).where(Trial.study_id == sid, Trial.slot.in_([1, 2, 3, 4]))
                  .values(duration_s=10.0))
        now = utcnow()
        for slot, elapsed in ((0, 4.0), (5, 6.0)):
            s.execute(update(Trial).where(Trial.study_id == sid, Trial.slot == slot)
                      .values(started_at=now - timedelta(seconds=elapsed)))


def test_eta_is_none_once_the_study_has_finished(client: TestClient, engine: Engine) -> None:
    sid = submit(client, {**CROSS, "families": ["constant"], "n_trials": 2,
                          "search_space": {"constant": CROSS["search_space"]["constant"]}})
    run_trial(engine, sid, 0, "constant", {"lr": 0.1}, 0.5)
    assert client.get(f"/v1/studies/{sid}").json()["eta_seconds"] is not None
    run_trial(engine, sid, 1, "constant", {"lr": 0.2}, 0.6)
    done = client.get(f"/v1/studies/{sid}").json()
    assert done["status"] == "succeeded" and done["eta_seconds"] is None
    assert "Estimated time left" not in client.get(f"/ui/studies/{sid}").text
    assert "ETA" not in progress_line(done)


def test_duration_text() -> None:
    assert [duration_text(s) for s in (0, 0.2, 59, 60, 61.5, 3599, 3600, 7620)] == [
        "0 s", "1 s", "59 s", "1 min 00 s", "1 min 02 s", "59 min 59 s", "1 h 00 min",
        "2 h 07 min"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_lrsearch_wait_prints_the_eta(settings: Settings, engine: Engine,
                                      tmp_path: Path) -> None:
    """`lrsearch wait` against a real `lrsearch api`: its progress lines (not a terminal, so
    one line per change, on stderr) carry the ETA the server estimated."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.update(LRSEARCH_DATABASE_URL=settings.database_url,
               LRSEARCH_DATA_DIR=str(tmp_path / "data"))
    port, log = free_port(), tmp_path / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([LRSEARCH, "api", "--port", str(port)], env=env, stdout=out,
                                stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        r = httpx.post(f"{url}/v1/studies", json={
            **CROSS, "families": ["constant"], "n_trials": 10,
            "search_space": {"constant": CROSS["search_space"]["constant"]}}, timeout=60)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        with Session(engine) as s, s.begin():
            study = progress.locked(s, sid)
            progress.start_trial(s, study, slot=0, number=0, family="constant",
                                 params={"lr": 0.1}, steps_per_epoch=7, worker="w0")
        set_up_eta_example(engine, sid)
        client_env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
        waited = subprocess.run([LRSEARCH, "wait", sid, "--timeout", "2", "--poll", "0.5"],
                                env={**client_env, "LRSEARCH_URL": url}, capture_output=True,
                                text=True, timeout=120)
        assert waited.returncode != 0 and "still running after 2 s" in waited.stderr, waited.stderr
        lines = [line for line in waited.stderr.splitlines() if "trials finished" in line]
        assert lines, waited.stderr
        assert lines[0].startswith("running: 4/10 trials finished (4 complete, 0 pruned, "
                                   "0 failed), 2 running, best val_accuracy 0.5400, ETA about ")
        shown = lines[0].rsplit("ETA about ", 1)[1]
        assert shown in ("23 s", "24 s", "25 s"), lines[0]
        # The client and `lrsearch plot` know the new kinds and the importance endpoint.
        with Client(url) as c:
            assert list(c.importance(sid)["importances"]) == ["constant"]
        for kind in ("importance", "params"):
            drawn = subprocess.run([LRSEARCH, "plot", sid, "--kind", kind, "-o",
                                    str(tmp_path / f"{kind}.png")],
                                   env={**client_env, "LRSEARCH_URL": url}, capture_output=True,
                                   text=True, timeout=120)
            assert drawn.returncode == 0, drawn.stderr
            assert_png((tmp_path / f"{kind}.png").read_bytes())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-8000:]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_concurrent_requests_for_one_study_evaluate_it_once(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight requests at once for a study nobody evaluated yet: one evaluation, the others
    wait for it and reuse its result (fANOVA on a big cross-family study costs seconds)."""
    sid = client.post("/v1/studies", json={"families": ["constant"], "dataset": "digits",
                                           "epochs": 2, "n_trials": 3,
                                           "baseline": {"enabled": False}}).json()["id"]
    calls: list[int] = []
    real = importance.compute

    def slow(session: Session, study: Study) -> Any:
        calls.append(1)
        time.sleep(1.0)
        return real(session, study)

    monkeypatch.setattr(importance, "compute", slow)
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(
        client.get(f"/v1/studies/{sid}/importance").status_code)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200] * 8 and len(calls) == 1
