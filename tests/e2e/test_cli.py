"""The `lrsearch` command line against a running `lrsearch serve`: real processes, real HTTP,
real training. `submit --wait` runs once in a pseudo-terminal (what a user sees: the rich
progress bar) and once piped (one progress line per change, as in a log)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

import keras

import lrsearch.schedules.keras  # noqa: F401  (registers FamilySchedule for deserialize)
from tests.e2e.conftest import Server, run_cli
from tests.processes import LRSEARCH

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
PNG = b"\x89PNG\r\n\x1a\n"
SEARCH = '{"cosine": {"peak_lr": {"low": 0.05, "high": 0.5}}}'


def run_in_terminal(server: Server, *args: str, timeout: float = 600,
                    size: tuple[int, int] | None = None) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; return (exit code, screen).
    `size` (columns, rows) sets the terminal's size (TIOCSWINSZ) and leaves COLUMNS and LINES
    out of the environment, so the program measures the terminal itself."""
    controller, terminal = pty.openpty()
    env = dict(server.env)
    if size is not None:
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([LRSEARCH, *args], stdin=terminal, stdout=terminal,
                            stderr=terminal, env={**env, "TERM": "xterm-256color"},
                            close_fds=True)
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process exited
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(controller)
    code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode(errors="replace")


def test_submit_wait_in_a_terminal_shows_a_progress_bar_and_the_best_schedule(
        server: Server) -> None:
    code, screen = run_in_terminal(
        server, "submit", "--family", "cosine", "--dataset", "digits", "--epochs", "2",
        "--batch-size", "64", "--n-trials", "3", "--pruner", "none", "--search-space", SEARCH,
        "--name", "cli-terminal", "--wait", "--poll", "0.5")
    text = ANSI.sub("", screen)
    assert code == 0, text
    assert "━" in screen  # rich's bar
    assert "5/5" in text and "best" in text  # 3 search trials + the baseline's 2
    assert "Best schedule: cosine" in text and "peak_lr" in text
    assert "keras.optimizers.schedules.deserialize(config)" in text


def test_submit_from_a_yaml_file_piped_prints_progress_lines(server: Server,
                                                             tmp_path: Path) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text("name: cli-yaml\nfamily: constant\ndataset: digits\nepochs: 2\n"
                    "batch_size: 64\nn_trials: 2\npruner: {name: none}\n"
                    "search_space:\n  constant:\n    lr: {low: 0.02, high: 0.2}\n")
    out = run_cli(server, "submit", "--file", str(spec), "--n-trials", "3", "--wait",
                  "--poll", "0.3")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "trials finished" in line]
    assert lines and lines[-1].startswith("succeeded: 3/3 trials finished"), out.stderr
    assert "best val_accuracy" in lines[-1]
    assert "Best schedule: constant" in out.stdout
    study_id = re.search(r"submitted study (\w+)", out.stderr).group(1)  # type: ignore[union-attr]

    # The other study commands on what it made.
    status = run_cli(server, "status", study_id, "--json")
    assert json.loads(status.stdout)["request"]["n_trials"] == 3  # the flag overrode the file
    listed = run_cli(server, "status")
    assert study_id in listed.stdout and "cli-yaml" in listed.stdout
    trials = run_cli(server, "trials", study_id, "--json")
    assert [t["state"] for t in json.loads(trials.stdout)] == ["complete"] * 3
    best = json.loads(run_cli(server, "best", study_id, "--json").stdout)
    schedule = keras.optimizers.schedules.deserialize(best["keras"])
    assert abs(float(schedule(0)) - best["params"]["lr"]) < 1e-6
    for kind in ("lr_curves", "history"):
        plot = run_cli(server, "plot", study_id, "--kind", kind, "-o", str(tmp_path / "p.png"))
        assert plot.returncode == 0, plot.stderr
        assert (tmp_path / "p.png").read_bytes()[:8] == PNG
    again = run_cli(server, "cancel", study_id)
    assert again.returncode == 1 and "already succeeded" in again.stderr
    assert run_cli(server, "delete", study_id).returncode == 0
    gone = run_cli(server, "status", study_id)
    assert gone.returncode == 1 and f"Unknown study `{study_id}`" in gone.stderr


def test_range_test_wait_prints_suggestions_and_draws_the_plot(server: Server,
                                                               tmp_path: Path) -> None:
    out = run_cli(server, "range-test", "--dataset", "digits", "--min-lr", "1e-4",
                  "--max-lr", "10", "--num-iter", "40", "--wait", "--plot",
                  str(tmp_path / "lr_find.png"))
    assert out.returncode == 0, out.stderr
    assert "Suggested learning rates" in out.stdout
    valley = re.search(r"valley[\s│]+([0-9.e+-]+)", out.stdout)
    assert valley is not None and 1e-4 <= float(valley.group(1)) <= 10, out.stdout
    assert "one_cycle" in out.stdout and "max_lr" in out.stdout  # the bounds per family
    assert (tmp_path / "lr_find.png").read_bytes()[:8] == PNG


def test_bad_input_exits_non_zero_with_the_apis_message(server: Server, tmp_path: Path
                                                        ) -> None:
    unknown = run_cli(server, "submit", "--family", "nope", "--dataset", "digits",
                      "--epochs", "2", "--n-trials", "1")
    assert unknown.returncode == 2
    assert "Unknown schedule family `nope`" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    zero = run_cli(server, "submit", "--family", "cosine", "--dataset", "digits",
                   "--epochs", "0", "--n-trials", "1")
    assert zero.returncode == 2 and "epochs" in zero.stderr and "greater than or equal to 1" \
        in zero.stderr
    bounds = run_cli(server, "range-test", "--dataset", "digits", "--min-lr", "1",
                     "--max-lr", "0.1")
    assert bounds.returncode == 2 and "min_lr" in bounds.stderr
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("- just\n- a list\n")
    listed = run_cli(server, "submit", "--file", str(bad_yaml))
    assert listed.returncode == 2 and "must hold a mapping" in listed.stderr
    unreachable = subprocess.run([LRSEARCH, "status", "--url", "http://127.0.0.1:9"],
                                 capture_output=True, text=True, env=server.env, timeout=60)
    assert unreachable.returncode == 1 and "cannot reach the lrsearch server" in \
        unreachable.stderr


def test_datasets_upload_list_delete(server: Server, tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "blobs.npz"
    np.savez(path, x_train=rng.normal(size=(120, 4)).astype("float32"),
             y_train=rng.integers(0, 3, 120))
    up = run_cli(server, "datasets", "upload", "blobs", str(path))
    assert up.returncode == 0, up.stderr
    assert '"train_samples": 96, "val_samples": 24' in up.stdout  # 20 % held out
    listed = run_cli(server, "datasets", "list")
    assert "blobs" in listed.stdout and "uploaded" in listed.stdout and "digits" in listed.stdout
    assert run_cli(server, "datasets", "delete", "blobs").returncode == 0
    assert "blobs" not in run_cli(server, "datasets", "list").stdout


def test_datasets_roots_read_up_to_the_first_line_exits_zero(server: Server) -> None:
    """`ROOT=$(lrsearch datasets roots | head -n 1)` under `set -o pipefail` (the README's
    walk-through): the reader closes the pipe right after the first line, so every root must
    already be written by then; a later write would end the command with status 1."""
    for _ in range(5):
        proc = subprocess.Popen([LRSEARCH, "datasets", "roots"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=server.env)
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # what `head -n 1` does once it has its line
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        assert first.strip() == str(server.folder / "roots" / "shared")


def test_best_prints_the_gain_over_the_constant_and_the_confirmation(
        server: Server, confirmed_study: dict[str, Any]) -> None:
    out = run_cli(server, "best", confirmed_study["id"])
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # rich wraps long lines at the terminal's width
    assert "Best schedule: cosine" in text and "mean of the confirmation's seeds" in text
    assert "Against a tuned constant LR (single runs; lr=" in text
    assert "Confirmation (finished)" in text and "(winner)" in text
    assert "Paired gain over the constant:" in text and "95 % interval" in text
    data = json.loads(run_cli(server, "best", confirmed_study["id"], "--json").stdout)
    assert data["answer"] == "confirmed" and len(data["confirmation"]["configurations"]) == 2


def test_training_options_reach_the_stored_request(server: Server) -> None:
    """--mixed-precision and --jit-compile become the body's mixed_precision and jit_compile
    (what the API validates and stores) for a study and a range test."""
    out = run_cli(server, "submit", "--family", "constant", "--dataset", "digits",
                  "--epochs", "1", "--n-trials", "1", "--mixed-precision", "--jit-compile",
                  "false", "--json")
    assert out.returncode == 0, out.stderr
    study = json.loads(out.stdout)
    assert study["request"]["mixed_precision"] is True
    assert study["request"]["jit_compile"] is False
    run_cli(server, "cancel", study["id"])  # unless the shared worker already ran it
    assert run_cli(server, "delete", study["id"]).returncode == 0
    out = run_cli(server, "range-test", "--dataset", "digits", "--num-iter", "10",
                  "--jit-compile", "auto", "--no-mixed-precision", "--json")
    assert out.returncode == 0, out.stderr
    test = json.loads(out.stdout)
    assert test["request"]["jit_compile"] == "auto"
    assert test["request"]["mixed_precision"] is False
    run_cli(server, "range-test", "cancel", test["id"])
    assert run_cli(server, "range-test", "delete", test["id"]).returncode == 0
    bad = run_cli(server, "submit", "--family", "constant", "--dataset", "digits",
                  "--jit-compile", "sometimes")
    assert bad.returncode == 2 and "--jit-compile" in bad.stderr
