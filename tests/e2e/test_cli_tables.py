"""`lrsearch trials`, `status`, `best` and `export` on a real 12-trial study of two families
(one worker, tiny trainings): what an 80-column terminal shows (a pseudo-terminal of that size:
rich reads the width from it), what `--wide` adds, and that the exported CSV and JSON hold the
API's values. Also the groups that list when run without a sub-command."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas
import pytest

from tests.e2e.conftest import Server, run_cli
from tests.e2e.test_cli import run_in_terminal as terminal_run

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
COLUMNS = 80

TABLES_STUDY: dict[str, Any] = {
    "name": "e2e-tables", "families": ["one_cycle", "cosine"], "dataset": "digits",
    "epochs": 1, "batch_size": 64, "n_trials": 12, "pruner": {"name": "none"},
    "sampler": {"name": "random", "seed": 0}, "baseline": {"enabled": False},
    "search_space": {"one_cycle": {"max_lr": {"low": 0.02, "high": 0.5}},
                     "cosine": {"peak_lr": {"low": 0.02, "high": 0.5}}}}


@pytest.fixture(scope="module")
def tables_study(server: Server) -> dict[str, Any]:
    """12 search trials of one_cycle and cosine (random sampler, no baseline), finished; with
    `trials`: the API's list of them."""
    with server.client() as c:
        study = c.submit(TABLES_STUDY, idempotency_key="e2e-tables")
        done = c.wait(study["id"], timeout=900, poll=0.5)
        assert done["status"] == "succeeded", (done, server.logs())
        trials = c.all_trials(study["id"])
    assert len(trials) == 12 and {t["family"] for t in trials} == {"one_cycle", "cosine"}, \
        trials
    return {**done, "trials": trials}


def run_in_terminal(server: Server, *args: str, columns: int = COLUMNS, rows: int = 50,
                    timeout: float = 120) -> tuple[int, list[str]]:
    """Run the CLI on a pseudo-terminal of `columns` x `rows` (TIOCSWINSZ; no COLUMNS in the
    environment, so rich measures the terminal itself); return (exit code, screen lines
    without ANSI codes)."""
    code, screen = terminal_run(server, *args, timeout=timeout, size=(columns, rows))
    return code, ANSI.sub("", screen).splitlines()


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.replace("┃", "│").split("│")[1:-1]]


def _header(lines: Sequence[str]) -> list[str]:
    headers = [_cells(line) for line in lines if line.startswith("┃")]
    assert len(headers) == 1, lines  # a header on one line: no name was wrapped
    return headers[0]


def _body(lines: Sequence[str]) -> list[list[str]]:
    return [_cells(line) for line in lines if line.startswith("│")]


def _searched_and_fixed(trials: Sequence[Mapping[str, Any]]
                        ) -> tuple[set[str], dict[str, set[str]]]:
    """From the API's trials: the names with more than one value in some family, and per
    family the names with one value in all its trials."""
    searched: set[str] = set()
    fixed: dict[str, set[str]] = {}
    for family in {t["family"] for t in trials}:
        params = [t["params"] for t in trials if t["family"] == family]
        for name in {n for p in params for n in p}:
            if len({json.dumps(p.get(name)) for p in params}) > 1:
                searched.add(name)
            else:
                fixed.setdefault(family, set()).add(name)
    return searched, {f: names - searched for f, names in fixed.items()}


def _best_first(trials: Sequence[Mapping[str, Any]]) -> list[str]:
    """The trials' numbers, best val_accuracy first (ties by slot), those without a value
    last."""
    scored = sorted((t for t in trials if t["value"] is not None),
                    key=lambda t: (-t["value"], t["slot"]))
    rest = sorted((t for t in trials if t["value"] is None), key=lambda t: t["slot"])
    return [str(t["number"]) for t in [*scored, *rest]]


def test_trials_fit_80_columns_one_line_per_trial_best_first(
        server: Server, tables_study: dict[str, Any]) -> None:
    code, lines = run_in_terminal(server, "trials", tables_study["id"])
    assert code == 0, "\n".join(lines)
    assert max(len(line) for line in lines) <= COLUMNS, "\n".join(lines)
    trials = tables_study["trials"]
    rows = _body(lines)
    assert len(rows) == len(trials), "\n".join(lines)  # no row took a second line
    header = _header(lines)
    searched, fixed = _searched_and_fixed(trials)
    assert len(searched) >= 4, trials  # one_cycle's and cosine's own: more than fit
    essential = ["#", "family", "state", "val_accuracy"]
    assert header[:4] == essential
    shown = header[4:]
    # whole names of searched parameters only, one column each, and not all of them here
    assert shown and set(shown) <= searched and len(set(shown)) == len(shown) < len(searched)
    text = " ".join(" ".join(lines).split())
    dropped = re.search(r"left out to fit the terminal's 80 columns: (.*?); --wide shows "
                        "every column", text)
    assert dropped is not None, text
    # the reason column is left out unnamed when no trial has one
    reasons = {"reason"} if any(t["failure_reason"] for t in trials) else set()
    assert set(dropped.group(1).split(", ")) == (searched - set(shown)) | reasons | {
        "slot", "seconds", "attempt"}
    for family, names in fixed.items():
        assert f"fixed: {family}: " in text and all(f"{n}=" in text for n in names), text
    assert [row[0] for row in rows] == _best_first(trials)
    by_number = {str(t["number"]): t for t in trials}
    for row in rows:
        t = by_number[row[0]]
        assert row[1] == t["family"] and row[2] == t["state"]
        if t["value"] is None:
            assert row[3] == "-"
        else:
            assert float(row[3]) == pytest.approx(t["value"], rel=5e-4)  # 4 significant digits
        for name, cell in zip(shown, row[4:], strict=True):
            value = t["params"].get(name)
            if name not in t["params"]:
                assert cell == "-"
            elif isinstance(value, str | bool):  # one_cycle's anneal, a choice
                assert cell == str(value)
            else:
                assert float(cell) == pytest.approx(value, rel=5e-4)


def test_trials_wide_shows_every_column(server: Server, tables_study: dict[str, Any]) -> None:
    code, lines = run_in_terminal(server, "trials", tables_study["id"], "--wide")
    assert code == 0, "\n".join(lines)
    header = _header(lines)
    searched, _ = _searched_and_fixed(tables_study["trials"])
    assert header[:5] == ["slot", "#", "family", "state", "val_accuracy"]
    assert header[-3:] == ["attempt", "seconds", "reason"]
    assert set(header[5:-3]) == searched
    assert len(_body(lines)) == len(tables_study["trials"])
    assert not any("left out" in line for line in lines)


def test_status_and_best_fit_80_columns(server: Server, tables_study: dict[str, Any]) -> None:
    code, lines = run_in_terminal(server, "status")
    assert code == 0 and max(len(line) for line in lines) <= COLUMNS, "\n".join(lines)
    assert tables_study["id"] in [row[0] for row in _body(lines)]  # the whole id
    code, lines = run_in_terminal(server, "status", tables_study["id"])
    assert code == 0 and max(len(line) for line in lines) <= COLUMNS, "\n".join(lines)
    assert any(line.split()[:2] == ["progress", "12/12"] for line in lines), lines
    code, lines = run_in_terminal(server, "best", tables_study["id"])
    assert code == 0, "\n".join(lines)
    snippet = lines.index("Use it in Keras:")
    assert max(len(line) for line in lines[:snippet]) <= COLUMNS, "\n".join(lines)
    text = " ".join(" ".join(lines).split())
    assert f"Best schedule: {tables_study['best']['family']}" in text


def _number(cell: str) -> float | None:
    """A CSV cell as pandas.read_csv reads a numeric column: empty is missing."""
    return None if cell == "" else float(cell)


def test_export_csv_holds_every_trial_with_the_apis_values(
        server: Server, tables_study: dict[str, Any]) -> None:
    out = run_cli(server, "export", tables_study["id"], "--format", "csv")
    assert out.returncode == 0, out.stderr
    trials = tables_study["trials"]
    # what a user does with it: pandas reads it back, one row per trial, numbers as numbers
    frame = pandas.read_csv(io.StringIO(out.stdout))
    assert len(frame) == len(trials)
    assert [None if pandas.isna(v) else v for v in frame["value"]] == \
        pytest.approx([t["value"] for t in trials])
    assert list(frame["number"]) == [t["number"] for t in trials]
    # and cell by cell with the csv module (exact text, empty cells)
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == len(trials)
    params = {n for t in trials for n in t["params"]}
    columns = list(rows[0])
    assert columns[:12] == ["role", "slot", "number", "confirms", "family", "state", "value",
                            "attempt", "seed", "duration_s", "failure_reason", "epochs"]
    assert {c for c in columns if c.startswith("param.")} == {f"param.{n}" for n in params}
    metrics = {c for c in columns if c.startswith("metric.")}
    assert {"metric.loss", "metric.val_loss", "metric.accuracy", "metric.val_accuracy"} <= \
        metrics
    with server.client() as c:
        for row, t in zip(rows, trials, strict=True):
            assert (row["role"], int(row["slot"]), int(row["number"]), row["family"],
                    row["state"], _number(row["value"]), int(row["attempt"]),
                    _number(row["duration_s"]), row["failure_reason"]) == \
                (t["role"], t["slot"], t["number"], t["family"], t["state"], t["value"],
                 t["attempt"], t["duration_s"], t["failure_reason"] or "")
            for name in params:
                cell = row[f"param.{name}"]
                value = t["params"].get(name)
                assert (cell == "" if value is None else
                        cell == str(value) if isinstance(value, str | bool) else
                        float(cell) == value), (name, cell, value)
            last = c.trial(tables_study["id"], t["number"])["history"][-1]["metrics"]
            assert row["epochs"] == "1"
            for column in metrics:
                value = last.get(column.removeprefix("metric."))
                assert (row[column] == "" if value is None else float(row[column]) == value)


def test_export_json_to_a_file(server: Server, tables_study: dict[str, Any],
                               tmp_path: Path) -> None:
    path = tmp_path / "trials.json"
    out = run_cli(server, "export", tables_study["id"], "--format", "json", "--output",
                  str(path))
    assert out.returncode == 0 and out.stdout == "", out.stderr
    assert f"wrote {path} (12 trials, json)" in out.stderr
    records = json.loads(path.read_text())
    trials = tables_study["trials"]
    assert [(r["slot"], r["role"], r["value"], r["params"]) for r in records] == \
        [(t["slot"], t["role"], t["value"], t["params"]) for t in trials]
    with server.client() as c:
        last = c.trial(tables_study["id"], trials[0]["number"])["history"][-1]["metrics"]
    assert records[0]["metrics"] == last and records[0]["epochs"] == 1


def test_groups_alone_list(server: Server) -> None:
    schedules = run_cli(server, "schedules")
    assert schedules.returncode == 0, schedules.stderr
    assert "one_cycle" in schedules.stdout and "cosine" in schedules.stdout
    datasets = run_cli(server, "datasets")
    assert datasets.returncode == 0 and "digits" in datasets.stdout, datasets.stderr
    models = run_cli(server, "models")
    assert models.returncode == 0 and "mlp" in models.stdout, models.stderr
