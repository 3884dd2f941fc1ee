"""End to end through HTTP on the embedded default: `lrsearch serve` (SQLite under ./.lrsearch,
API + worker + reaper in one command), a study of 4 trials on digits and a range test, then
Ctrl-C stops everything."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest

import lrsearch.schedules.keras  # noqa: F401
from lrsearch import schedules
from tests.processes import LRSEARCH, free_port, wait_ready

# Real processes on a 2-core machine: one unexplained wait timeout was seen once in six full
# runs (a worker idle, no trial observed running). A failed attempt is rerun once; the first
# attempt's report, with every job and trial row, still shows in the output as RERUN.
pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=2)


def group_alive(pgid: int) -> bool:
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    return bool(found.stdout.strip())


def poll(http: httpx.Client, path: str, done: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = http.get(path).json()
        if body["status"] in done:
            return body
        time.sleep(0.5)
    raise AssertionError(f"{path} did not finish in {timeout}s")


def test_serve_runs_a_study_and_a_range_test_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", LRSEARCH_POLL_SECONDS="0.2")
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen([LRSEARCH, "serve", "--port", str(port), "--workers", "1"],
                             cwd=tmp_path, env=env, stdout=log, stderr=log,
                             start_new_session=True)  # its own process group, see below
    try:
        wait_ready(f"http://127.0.0.1:{port}", serve, tmp_path / "serve.log", timeout=60)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            run_study(http)
            run_range_test(http)
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=90) == 0
        deadline = time.monotonic() + 15  # workers, their children and helpers wind down
        while group_alive(serve.pid) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not group_alive(serve.pid), "processes outlived serve"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)  # whatever is left, workers included
    assert (tmp_path / ".lrsearch" / "lrsearch.db").exists()
    assert (tmp_path / ".lrsearch" / "optuna.db").exists()


def run_study(http: httpx.Client) -> None:
    r = http.post("/v1/studies", json={
        "family": "cosine", "dataset": "digits", "epochs": 3, "batch_size": 64, "n_trials": 4,
        "search_space": {"cosine": {"peak_lr": {"low": 0.05, "high": 0.5, "log": True}}}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    study = poll(http, f"/v1/studies/{sid}", {"succeeded", "failed", "cancelled"}, 300)
    assert study["status"] == "succeeded", study
    counts = study["counts"]  # 4 search trials and the constant-LR baseline's 2
    assert study["n_slots"] == 6
    assert counts["complete"] + counts["pruned"] + counts["failed"] == 6
    best = http.get(f"/v1/studies/{sid}/best").json()
    assert best["baseline"] is not None and best["baseline"]["source"] == "baseline"
    assert best["family"] == "cosine" and 0 < best["value"] <= 1
    assert len(best["history"]) == 3 and best["history"][0]["lr_first"] is not None
    spe = best["steps_per_epoch"]
    assert spe == int(np.ceil(1438 / 64))  # digits: 1,438 training samples
    lrs = schedules.curve("cosine", best["params"], steps_per_epoch=spe, epochs=3)
    assert best["curve"]["lr"] == lrs[best["curve"]["step"]].tolist()
    assert best["history"][0]["lr_first"] == np.float32(lrs[0])  # the applied LR
    schedule = keras.optimizers.schedules.deserialize(best["keras"])
    assert abs(float(schedule(5)) - lrs[5]) <= 1e-5 * lrs[5]


def run_range_test(http: httpx.Client) -> None:
    r = http.post("/v1/range-tests", json={"dataset": "digits", "min_lr": 1e-4, "max_lr": 10,
                                           "num_iter": 60, "batch_size": 32})
    assert r.status_code == 201, r.text
    test = poll(http, f"/v1/range-tests/{r.json()['id']}", {"succeeded", "failed"}, 180)
    assert test["status"] == "succeeded", test
    sweep = test["sweeps"][0]
    assert len(sweep["lrs"]) == len(sweep["smoothed"]) > 5
    assert test["suggestions"]["valley"]["median"] is not None
    assert "max_lr" in test["family_bounds"]["one_cycle"]
