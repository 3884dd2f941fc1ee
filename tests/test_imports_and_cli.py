"""Import boundaries (no TensorFlow where the API will import) and the command line, run as
real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import LRSEARCH

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.parametrize("module", ["lrsearch", "lrsearch.schedules", "lrsearch.schedules.search",
                                    "lrsearch.range_test", "lrsearch.datasets", "lrsearch.models",
                                    "lrsearch.optimizers"])
def test_import_does_not_load_tensorflow(module: str) -> None:
    code = (f"import sys, {module}; "
            "bad = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LRSEARCH, *args], capture_output=True, text=True, env=ENV,
                          timeout=300)


def test_cli_lists_and_shows_families() -> None:
    listed = run_cli("schedules", "list")
    assert listed.returncode == 0 and "one_cycle" in listed.stdout
    shown = run_cli("schedules", "show", "wsd")
    assert json.loads(shown.stdout)["name"] == "wsd"


def test_cli_preview_prints_per_epoch_lrs(tmp_path: Path) -> None:
    out = run_cli("schedules", "preview", "step_decay", "--params",
                  '{"lr0": 0.1, "epochs_drop": 2}', "--epochs", "4", "--steps-per-epoch", "3",
                  "--png", str(tmp_path / "step.png"))
    assert out.returncode == 0, out.stderr
    assert "epoch    2  first step 0.05" in out.stdout
    assert (tmp_path / "step.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_input_exits_2_with_the_message() -> None:
    out = run_cli("schedules", "preview", "cosine", "--params", '{"warmup_epochs": 12}',
                  "--epochs", "10", "--steps-per-epoch", "5")
    assert out.returncode == 2
    assert "`warmup_epochs` must be < `epochs`" in out.stderr and "Traceback" not in out.stderr


def test_cli_range_test_json() -> None:
    out = run_cli("local", "range-test", "--dataset", "synthetic_argmax", "--num-iter", "20",
                  "--batch-size", "100", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert len(result["sweeps"][0]["lrs"]) <= 20 and "suggestions" in result
