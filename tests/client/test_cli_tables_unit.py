"""The command line's fitted tables on made-up rows (no server): at 80 columns every row stays
on one line, the columns that do not fit are named under the table in their tier order, the
parameters with one value per family are noted once, rows come best first in the study's
direction; `--wide` shows every column. Also the export's CSV and JSON, and groups run
without a sub-command (real processes)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console

from lrsearch.cli.output import (
    Column,
    View,
    _fmt,
    export_csv,
    export_json,
    export_records,
    fit,
    objective_direction,
    print_best,
    print_view,
    rank_trials,
    record_lines,
    split_params,
    studies_view,
    table_width,
    trial_label,
    trials_view,
)
from tests.processes import LRSEARCH

REASON = "ValueError: the loss is NaN at epoch 2\n  Traceback (most recent call last): ..."


def _trial(slot: int, family: str, params: dict[str, Any], value: float | None,
           state: str = "complete", role: str = "search", **extra: Any) -> dict[str, Any]:
    return {"slot": slot, "number": slot, "family": family, "params": params, "state": state,
            "value": value, "attempt": 1, "duration_s": 10.0 + slot / 3,
            "failure_reason": REASON if state == "failed" else None, "role": role, **extra}


def _one_cycle(i: int) -> dict[str, Any]:
    return {"max_lr": 0.01 * (i + 1) ** 1.5, "pct_start": 0.1 + 0.03 * i,
            "div_factor": 5.0 + 7.123456 * i, "final_div_factor": 100.0 * (i + 1) ** 3,
            "anneal": "cos", "cycle_momentum": True, "base_momentum": 0.85}


def _cosine(i: int) -> dict[str, Any]:
    return {"peak_lr": 0.02 * (i + 1), "alpha": 0.01 * i, "warmup_epochs": 0.05 * i}


# 12 search trials of two families (one failed, one pruned with a value, one running),
# a baseline trial and a confirmation run: the shapes the API lists.
TRIALS = [_trial(i, "one_cycle" if i % 2 else "cosine",
                 _one_cycle(i) if i % 2 else _cosine(i), 0.5 + ((i * 7) % 12) / 100)
          for i in range(12)]
TRIALS[3].update(state="failed", value=None, failure_reason=REASON)
TRIALS[4].update(state="pruned", value=0.99)
TRIALS[6].update(state="running", value=None, duration_s=None)
TRIALS += [_trial(12, "constant", {"lr": 0.05}, 0.555, role="baseline"),
           _trial(13, "cosine", _cosine(8), 0.605, role="confirm", number=None, confirms=8)]
LEFT_OUT = "left out to fit the terminal's 80 columns"
SEARCHED = ["max_lr", "peak_lr", "pct_start", "alpha", "div_factor", "warmup_epochs",
            "final_div_factor"]


def _printed(view: View, width: int, wide: bool = False) -> list[str]:
    out = Console(width=width, file=io.StringIO(), force_terminal=False, color_system=None)
    print_view(view, wide, out)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    return text.splitlines()


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.replace("┃", "│").split("│")[1:-1]]


def _body(lines: Sequence[str]) -> list[list[str]]:
    return [_cells(line) for line in lines if line.startswith("│")]


def _header(lines: Sequence[str]) -> list[str]:
    return next(_cells(line) for line in lines if line.startswith("┃"))


def test_the_trials_table_fits_80_columns_one_line_per_trial() -> None:
    view = trials_view(TRIALS, "val_accuracy")
    lines = _printed(view, 80)
    assert max(cell_len(line) for line in lines) <= 80, "\n".join(lines)
    # the width the columns were chosen by is the width rich draws
    assert {cell_len(line) for line in lines if line[0] in "┏┃┡│└"} == \
        {table_width(fit(view, 80)[0])}
    rows = _body(lines)
    assert len(rows) == len(TRIALS)
    header = _header(lines)
    assert header[:4] == ["#", "family", "state", "val_accuracy"]
    shown = header[4:]
    # the searched parameters in priority order while they fit; none of the extras then
    assert shown and shown == SEARCHED[:len(shown)] and len(shown) < len(SEARCHED)
    dropped = [line for line in lines if line.startswith(LEFT_OUT)]
    assert len(dropped) == 1, lines
    text = " ".join(" ".join(lines).split())
    left_out = ", ".join([*SEARCHED[len(shown):], "reason", "slot", "seconds", "attempt"])
    assert f"{LEFT_OUT}: {left_out}; --wide shows every column" in text
    # one_cycle's three unsearched parameters once, above the table; the baseline's lone
    # trial and its lr likewise
    assert "fixed: one_cycle: anneal=cos, cycle_momentum=True, base_momentum=0.85" in text
    assert "params: constant (1 trial): lr=0.05" in text


def test_rows_come_best_first_then_pruned_then_those_without_a_value() -> None:
    rows = _body(_printed(trials_view(TRIALS, "val_accuracy"), 80))
    labels = [row[0] for row in rows]
    values = [float(row[3]) for row in rows if row[3] != "-"]
    complete = [t for t in TRIALS if t["state"] == "complete"]
    assert values[:len(complete)] == sorted(values[:len(complete)], reverse=True)
    assert labels[len(complete)] == "4" and rows[len(complete)][2] == "pruned"
    assert sorted(labels[-2:]) == ["3", "6"]  # failed, running: no value, by slot
    assert "baseline 0" not in labels and "baseline 12" in labels
    assert "confirms slot 8" in labels
    minimized = [row[0] for row in _body(_printed(trials_view(TRIALS, "val_loss", "minimize"),
                                                   80))]
    assert minimized[:len(complete)] == labels[:len(complete)][::-1]


def test_wide_shows_every_column_and_whole_cells() -> None:
    lines = _printed(trials_view(TRIALS, "val_accuracy"), 80, wide=True)
    header = _header(lines)
    assert header == ["slot", "#", "family", "state", "val_accuracy", *SEARCHED, "attempt",
                      "seconds", "reason"]
    rows = _body(lines)
    assert len(rows) == len(TRIALS)
    failed = next(row for row in rows if row[3] == "failed")
    assert failed[-1] == " ".join(REASON.split())  # whole, on one line
    assert not any(line.startswith("left out") for line in lines)
    assert max(cell_len(line) for line in lines) > 80


def test_numbers_have_four_significant_digits() -> None:
    assert [_fmt(v) for v in (0.123456, 1234567.0, 1.23456e-5, 3, True, None, [0.5, 0.33333])] \
        == ["0.1235", "1.235e+06", "1.235e-05", "3", "True", "-", "[0.5, 0.3333]"]
    lines = _printed(trials_view(TRIALS, "val_accuracy"), 200, wide=True)
    column = _header(lines).index("div_factor")
    div = {row[1]: row[column] for row in _body(lines)}
    assert div["5"] == "40.62" and div["0"] == "-"


def test_searched_params_are_a_union_over_families_with_shared_names_in_one_column() -> None:
    rows: list[dict[str, Any]] = [
        {"family": "cosine", "params": {"peak_lr": 0.1, "alpha": 0.0}},
        {"family": "cosine", "params": {"peak_lr": 0.2, "alpha": 0.0}},
        {"family": "wsd", "params": {"peak_lr": 0.3, "decay_frac": 0.2}},
        {"family": "wsd", "params": {"peak_lr": 0.4, "decay_frac": 0.3}},
        {"family": None, "params": None}]  # a queued trial
    split = split_params(rows)
    assert split.searched == ["peak_lr", "decay_frac"]  # in wsd's declaration order
    assert split.notes() == ["fixed: cosine: alpha=0"]
    view = trials_view([{"slot": i, "number": i, "state": "complete", "value": 0.9 - i / 10,
                         "attempt": 1, "duration_s": 1.0, "failure_reason": None, **r}
                        for i, r in enumerate(rows)], "val_accuracy")
    lines = _printed(view, 80)
    header = _header(lines)
    first = header.index("val_accuracy") + 1
    assert header[first:first + 2] == ["peak_lr", "decay_frac"]
    assert [row[first:first + 2] for row in _body(lines)] == [
        ["0.1", "-"], ["0.2", "-"], ["0.3", "0.2"], ["0.4", "0.3"], ["-", "-"]]
    # a parameter fixed in one family but searched in another is a column, not a note
    mixed = split_params([*rows[:2], {"family": "wsd", "params": {"alpha": 0.1}},
                          {"family": "wsd", "params": {"alpha": 0.2}}])
    assert mixed.searched == ["peak_lr", "alpha"] and mixed.notes() == []


def test_fit_keeps_essentials_ranked_while_they_fit_then_extras_each_if_it_fits() -> None:
    def col(key: str, width: int, blank: bool = False) -> Column:
        return Column(key, key, ("" if blank else "x" * width,))

    columns = [col("a", 10), col("r1", 10), col("r2", 30), col("r3", 1), col("e1", 40),
               col("e2", 2), col("e3", 5, blank=True)]
    view = View("t", columns, essential=["a"], ranked=["r1", "r2", "r3"],
                extras=["e1", "e2", "e3"])
    shown, dropped = fit(view, 80)
    # every ranked column fits; then e1 does not, e2 still does
    assert [c.key for c in shown] == ["a", "r1", "r2", "r3", "e2"]
    assert [c.key for c in dropped] == ["e1"]  # e3 is blank: left out unnamed
    assert table_width(shown) <= 80 < table_width([*shown, columns[4]])
    shown, dropped = fit(view, 40)
    # r2 does not fit: r3 (which would) and every extra go with it
    assert [c.key for c in shown] == ["a", "r1"]
    assert [c.key for c in dropped] == ["r2", "r3", "e1", "e2"]
    with pytest.raises(ValueError, match="exactly one tier"):
        View("t", columns, essential=["a"])


LONG_METRIC = "val_sparse_categorical_accuracy"
PLUGIN_FAMILY = "a_very_long_family_name_from_a_plugin_xxxxxxxxxxxxxxx"
# a long plugin family beside a built-in one, a baseline and a confirmation run (the widest
# labels), a failed trial (no value) and a queued one (no number, family or value yet)
NARROW_TRIALS = [_trial(i, PLUGIN_FAMILY if i % 2 else "one_cycle",
                        {"peak_lr": 0.1 * (i + 1)} if i % 2 else _one_cycle(i),
                        0.9 - i * 0.0123456) for i in range(6)]
NARROW_TRIALS[5].update(state="failed", value=None, failure_reason=REASON)
NARROW_TRIALS += [_trial(6, "constant", {"lr": 0.05}, 0.51234, role="baseline"),
                  _trial(13, "one_cycle", _one_cycle(2), 0.887654, role="confirm",
                         number=None, confirms=2),
                  {"slot": 14, "number": None, "family": None, "state": "queued",
                   "value": None, "params": None, "role": "search"}]


def _rows(lines: Sequence[str], first: str) -> list[dict[str, str]]:
    """The rows printed, as {header: cell}, from either layout: a table, or the lines of
    `header=cell` items (record_lines) whose rows start with `first`= at the margin."""
    if any(line.startswith("┃") for line in lines):
        header = _header(lines)
        return [dict(zip(header, row, strict=True)) for row in _body(lines)]
    rows: list[dict[str, str]] = []
    for line in lines:
        if line.startswith(f"{first}="):
            rows.append({})
        elif not (rows and line.startswith("  ")):
            continue  # the title, a note, the left-out line
        for item in line.strip().split("  "):
            name, _, cell = item.partition("=")
            rows[-1][name] = cell
    return rows


def _left_out(lines: Sequence[str]) -> str:
    text = " ".join(" ".join(lines).split())
    return text[text.index("left out to fit"):] if "left out to fit" in text else ""


@pytest.mark.parametrize("width", [30, 40, 50, 60, 80])
def test_narrow_trials_tables_keep_every_trials_label_state_and_value(width: int) -> None:
    lines = _printed(trials_view(NARROW_TRIALS, LONG_METRIC), width)
    assert max(cell_len(line) for line in lines) <= width, "\n".join(lines)
    # the title names the metric (folded at 30 columns) ...
    assert f"({LONG_METRIC},maximize)" in "".join("".join(lines).split())
    rows = _rows(lines, "#")
    expected = rank_trials(NARROW_TRIALS)
    assert len(rows) == len(expected), "\n".join(lines)
    for row, trial in zip(rows, expected, strict=True):
        # ... so that its column is headed "value"; and nothing essential is blank
        assert row["#"] == trial_label(trial), (row, trial)
        assert row["state"] == trial["state"], (row, trial)
        assert row["value"] == _fmt(trial["value"]), (row, trial)
        if "family" in row:
            family = _fmt(trial["family"])
            cell = row["family"]
            assert cell == family or (cell.endswith("…") and family.startswith(cell[:-1])
                                      and 6 <= cell_len(cell) <= 16), (cell, family)
    shown = _header(lines) if any(line.startswith("┃") for line in lines) else []
    if width >= 60:
        # family cut to its cap, before any parameter column
        assert shown[:4] == ["#", "family", "state", "value"]
        assert rows[0]["family"] == "one_cycle"
        assert any(row["family"] == "a_very_long_fam…" for row in rows)
    elif width == 50:
        # family cut further so that the label, state and value fit whole; nothing else
        assert shown == ["#", "family", "state", "value"]
        assert {row["family"] for row in rows} == {"one_cyc…", "a_very_…", "constant", "-"}
    elif width == 40:
        # family is the first essential column to go, named with the rest
        assert shown == ["#", "state", "value"]
        assert _left_out(lines).startswith(
            "left out to fit the terminal's 40 columns: family, max_lr, peak_lr")
    else:
        # too narrow for a table of the label, state and value: a line of items per row
        assert not shown and "family" in rows[0]
        assert "family" not in _left_out(lines).split(": ")[1]


def test_a_custom_trials_title_still_names_the_metric() -> None:
    lines = _printed(trials_view(NARROW_TRIALS[:1], LONG_METRIC, "minimize", "Trial #0"), 40)
    assert " ".join(" ".join(lines).split()).startswith(
        "Trial #0 (val_sparse_categorical_accuracy, minimize)")
    assert _rows(lines, "#")[0]["value"] == _fmt(NARROW_TRIALS[0]["value"])


STUDIES: list[dict[str, Any]] = [{"id": f"{i:032x}" if i else "23073314292e461fa2b920a21ab30273",
            "name": "a rather long study name " * 2, "status": status,
            "families": ["one_cycle", PLUGIN_FAMILY], "counts": {"finished": 3 * i},
            "n_slots": 15, "best": {"value": 0.9 - i / 7} if i else None,
            "created_at": "2026-01-02T03:04:05.678+00:00"}
           for i, status in enumerate(["running", "succeeded", "cancelled", "queued"])]


@pytest.mark.parametrize("width", [40, 50, 60, 80])
def test_narrow_studies_lists_keep_the_whole_id_and_the_status(width: int) -> None:
    lines = _printed(studies_view(STUDIES), width)
    assert max(cell_len(line) for line in lines) <= width, "\n".join(lines)
    rows = _rows(lines, "id")
    assert [row["id"] for row in rows] == [s["id"] for s in STUDIES], "\n".join(lines)
    assert [row["status"] for row in rows] == [s["status"] for s in STUDIES]
    for row, study in zip(rows, STUDIES, strict=True):
        if "progress" in row:
            assert row["progress"] == f"{study['counts']['finished']}/15"
        if "best" in row:
            assert row["best"] == _fmt((study["best"] or {}).get("value"))
    table = any(line.startswith("┃") for line in lines)
    expected = {40: {"id", "status", "progress", "best"}, 50: {"id", "status"},
                60: {"id", "status", "progress"}}.get(width)
    if expected is not None:
        assert set(rows[0]) == expected and table is (width > 40), "\n".join(lines)
    else:
        assert {"id", "status", "progress", "best"} <= set(rows[0])
    if width == 40:
        # a line of its own for the id, the rest indented under it
        assert lines[1] == f"id={STUDIES[0]['id']}" and lines[2].startswith("  status=running")


def test_record_lines_never_cut_the_first_item_and_cut_the_others_to_the_width() -> None:
    columns = [Column("id", "id", ("x" * 30,)), Column("state", "state", ("complete",)),
               Column("family", "family", ("f" * 40,))]
    assert record_lines(columns, 20) == ["id=" + "x" * 30, "  state=complete",
                                         "  family=ffffffffff…"]
    assert record_lines(columns[1:2], 20) == ["state=complete"]


def test_expendable_columns_must_be_some_of_the_essential_ones() -> None:
    columns = [Column("a", "a", ("1",)), Column("b", "b", ("2",)), Column("c", "c", ("3",))]
    with pytest.raises(ValueError, match=r"expendable \['c'\] must be distinct essential"):
        View("t", columns, essential=["a", "b"], extras=["c"], expendable=["c"])
    with pytest.raises(ValueError, match=r"expendable \['a', 'b'\] must be"):
        View("t", columns, essential=["a", "b"], extras=["c"], expendable=["a", "b"])
    with pytest.raises(ValueError, match="Column 'a': least must be at least 1, got 0"):
        Column("a", "a", ("1",), least=0)


def test_direction_from_the_request_or_inferred_from_the_metric() -> None:
    assert objective_direction({"request": {"objective": {"metric": "val_auc",
                                                          "direction": "minimize"}}}) \
        == "minimize"
    assert objective_direction({"request": {"metric": "val_loss"}}) == "minimize"
    assert objective_direction({"request": {"objective": {"metric": "val_mae"}}}) == "minimize"
    assert objective_direction({"request": {"metric": "x", "direction": "minimize"}}) \
        == "minimize"
    assert objective_direction({"request": {}}) == "maximize"
    order = rank_trials([{"slot": 0, "state": "complete", "value": 0.2},
                         {"slot": 1, "state": "failed", "value": None},
                         {"slot": 2, "state": "complete", "value": 0.1}], "minimize")
    assert [t["slot"] for t in order] == [2, 0, 1]


def test_the_studies_list_fits_with_whole_ids() -> None:
    studies = [{"id": f"{i:032x}", "name": "a rather long study name " * 3, "status": "running",
                "families": ["one_cycle", "cosine", "wsd", "cyclical"],
                "counts": {"finished": i}, "n_trials": 12, "n_slots": 15,
                "best": {"value": 0.912345} if i else None,
                "created_at": "2026-01-02T03:04:05.678+00:00"} for i in range(4)]
    lines = _printed(studies_view(studies), 80)
    assert max(cell_len(line) for line in lines) <= 80
    rows = _body(lines)
    assert [row[0] for row in rows] == [s["id"] for s in studies]
    assert rows[1][_header(lines).index("best")] == "0.9123"
    wide = _printed(studies_view(studies), 80, wide=True)
    assert _header(wide) == ["id", "name", "status", "families", "progress", "best",
                             "created (UTC)"]
    assert _body(wide)[0][3] == "one_cycle, cosine, wsd, cyclical"


def test_best_fits_80_columns(monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    history = [{"epoch": e, "lr_first": 0.1, "lr_last": 0.05, "seconds": 1.5,
                "metrics": {name: 0.5 for name in ("loss", "val_loss", "accuracy",
                                                   "val_accuracy", "sparse_top_k",
                                                   "val_sparse_top_k", "auc", "val_auc")}}
               for e in range(3)]
    confirmation = {"status": "finished", "seeds": 3, "winner": {"slot": 4},
                    "configurations": [
                        {"slot": 4, "trial_number": 4, "role": "search", "family": "one_cycle",
                         "params": _one_cycle(4), "mean": 0.9, "std": 0.01, "n": 3,
                         "runs": [{}] * 3},
                        {"slot": 5, "trial_number": 5, "role": "search", "family": "one_cycle",
                         "params": _one_cycle(5), "mean": 0.89, "std": 0.02, "n": 3,
                         "runs": [{}] * 3},
                        {"slot": 20, "trial_number": 1, "role": "baseline",
                         "family": "constant", "params": {"lr": 0.05}, "mean": 0.85,
                         "std": 0.01, "n": 2, "runs": [{}] * 3}],
                    "gain": {"mean": 0.05, "ci95": [0.01, 0.09], "n": 3,
                             "verdict": "the schedule is better"}}
    best = {"family": "one_cycle", "trial_number": 4, "metric": "val_accuracy", "value": 0.9,
            "answer": "confirmed", "params": _one_cycle(4), "history": history,
            "confirmation": confirmation,
            "leaderboard": [{"family": "one_cycle", "value": 0.9, "trial_number": 4}],
            "note": "adaptive"}
    monkeypatch.setenv("COLUMNS", "80")
    print_best(best)
    lines = capsys.readouterr().out.splitlines()
    assert max(cell_len(line) for line in lines) <= 80, "\n".join(lines)
    text = " ".join(" ".join(lines).split())
    assert "Best schedule: one_cycle (trial #4, val_accuracy 0.9, mean of the confirmation's " \
        "seeds)" in text
    assert "fixed: one_cycle: anneal=cos, cycle_momentum=True, base_momentum=0.85" in text
    assert "params: constant (1 configuration): lr=0.05" in text
    assert "#4 (winner)" in text and "--wide shows every column" in text
    confirm_header = next(_cells(line) for line in lines
                          if line.startswith("┃") and "trial" in line)
    assert confirm_header[:3] == ["trial", "family", "max_lr"]


RECORD_TRIALS = [
    {**_trial(0, "cosine", {"peak_lr": 0.1, "boundaries": [1, 2]}, 0.9), "seed": 7},
    {**_trial(1, "constant", {"lr": 0.05}, None, state="failed", role="baseline"),
     "seed": 8},
    {**_trial(2, "cosine", {"peak_lr": 0.1, "boundaries": [1, 2]}, 0.8, role="confirm",
              number=None, confirms=0), "seed": 9}]
HISTORIES: dict[int, list[dict[str, Any]] | None] = {
    0: [{"epoch": 0, "metrics": {"loss": 2.0, "val_accuracy": 0.5}},
        {"epoch": 1, "metrics": {"loss": 1.0, "val_loss": 1.5, "val_accuracy": 0.9}}],
    1: []}


def test_export_records_csv_and_json() -> None:
    records = export_records(RECORD_TRIALS, HISTORIES)
    assert [r["role"] for r in records] == ["search", "baseline", "confirm"]
    assert [r["epochs"] for r in records] == [2, 0, None]
    assert records[0]["metrics"] == {"loss": 1.0, "val_loss": 1.5, "val_accuracy": 0.9}
    assert records[2]["metrics"] == {} and records[2]["confirms"] == 0
    assert json.loads(export_json(records)) == records
    rows = list(csv.DictReader(io.StringIO(export_csv(records))))
    assert list(rows[0]) == ["role", "slot", "number", "confirms", "family", "state", "value",
                             "attempt", "seed", "duration_s", "failure_reason", "epochs",
                             "param.peak_lr", "param.boundaries", "param.lr", "metric.loss",
                             "metric.val_loss", "metric.val_accuracy"]
    assert [float(r["value"]) if r["value"] else None for r in rows] == [0.9, None, 0.8]
    assert json.loads(rows[0]["param.boundaries"]) == [1, 2] and rows[0]["param.lr"] == ""
    assert rows[1]["failure_reason"] == REASON  # quoted, newline and all
    assert rows[0]["metric.val_loss"] == "1.5" and rows[2]["metric.loss"] == ""
    assert float(rows[0]["duration_s"]) == RECORD_TRIALS[0]["duration_s"]


ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "100"}


def _run(*args: str, env: Mapping[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LRSEARCH, *args], capture_output=True, text=True,
                          env={**ENV, **(env or {})}, timeout=120)


def test_groups_without_a_sub_command_list_or_show_their_help() -> None:
    alone, listed = _run("schedules"), _run("schedules", "list")
    assert alone.returncode == 0 and alone.stdout == listed.stdout
    assert "one_cycle" in alone.stdout and "cosine" in alone.stdout
    local = _run("local")
    assert local.returncode == 0 and "range-test" in local.stdout and "Usage:" in local.stdout
    # `datasets` alone is `datasets list`, its options read from the environment: the same
    # request to the same (unreachable) server, the same error
    alone = _run("datasets", env={"LRSEARCH_URL": "http://127.0.0.1:9"})
    listed = _run("datasets", "list", env={"LRSEARCH_URL": "http://127.0.0.1:9"})
    assert alone.returncode == listed.returncode == 1 and alone.stderr == listed.stderr
    assert "cannot reach the lrsearch server at http://127.0.0.1:9" in alone.stderr

