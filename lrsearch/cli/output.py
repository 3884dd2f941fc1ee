"""What the command line prints: rich tables, the progress display, PNG files, JSON options."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from lrsearch.history import metric_columns, metrics_of


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


class JsonObject(click.ParamType):
    """A JSON object given inline."""

    name = "JSON"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as e:
            self.fail(f"not valid JSON ({e}): {value!r}", param, ctx)
        if not isinstance(parsed, dict):
            self.fail(f"must be a JSON object, got {value!r}", param, ctx)
        return parsed


def write_png(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    click.echo(f"wrote {path} ({len(data):,} bytes)", err=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def finished(study: Mapping[str, Any]) -> int:
    return int(study["counts"]["finished"])


def slots(study: Mapping[str, Any]) -> int:
    """Every slot the counts cover: the search's, the baseline's, and confirmation runs once
    queued (`n_trials` from servers before baselines existed)."""
    return int(study.get("n_slots") or study["n_trials"])


def objective_metric(study: Mapping[str, Any]) -> str:
    """The metric a study optimises, from its request: `objective.metric`, or the flat
    `metric` of older requests (val_accuracy when neither was given)."""
    request = study.get("request") or {}
    objective = request.get("objective")
    if isinstance(objective, Mapping) and objective.get("metric"):
        return str(objective["metric"])
    return str(request.get("metric") or "val_accuracy")


def progress_line(study: Mapping[str, Any]) -> str:
    c = study["counts"]
    best = study.get("best") or {}
    metric = objective_metric(study)
    shown = f", best {metric} {best['value']:.4f}" if best.get("value") is not None else ""
    return (f"{study['status']}: {finished(study)}/{slots(study)} trials finished "
            f"({c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed), "
            f"{c['running']} running{shown}")


class StudyProgress:
    """A live bar of finished/total trials with the best value so far on a terminal; one line
    per change otherwise (logs, CI, pipes)."""

    def __init__(self, study: Mapping[str, Any]) -> None:
        self.out = console(stderr=True)
        self.last = ""
        self.bar: Progress | None = None
        if self.out.is_terminal:
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("{task.fields[best]}"),
                                TimeElapsedColumn(), console=self.out)
            self.task = self.bar.add_task(f"study {study['id'][:8]}", total=slots(study),
                                          best="")
            self.bar.start()

    def update(self, study: Mapping[str, Any]) -> None:
        if self.bar is not None:
            best = study.get("best") or {}
            text = (f"best {best['value']:.4f}" if best.get("value") is not None else "")
            self.bar.update(self.task, completed=finished(study), total=slots(study),
                            best=f"{study['status']} {text}")
            return
        line = progress_line(study)
        if line != self.last:
            self.out.print(line)
            self.last = line

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def study_table(study: Mapping[str, Any]) -> Table:
    table = Table(show_header=False, box=None)
    rows = [("id", study["id"]), ("name", study["name"]), ("status", study["status"]),
            ("families", ", ".join(study["families"])), ("dataset", study["dataset"]),
            ("progress", progress_line(study))]
    if study.get("error"):
        rows.append(("error", study["error"]))
    if study.get("stop_reason"):
        rows.append(("stopped early", study["stop_reason"]))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", _fmt(value))
    return table


def best_table(best: Mapping[str, Any]) -> Table:
    how = "mean of the confirmation's seeds" if best.get("answer") == "confirmed" else \
        "a single run"
    table = Table(title=f"Best schedule: {best['family']} (trial #{best['trial_number']}, "
                  f"{best['metric']} {_fmt(best['value'])}, {how})", title_justify="left")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    for key, value in best["params"].items():
        table.add_row(key, _fmt(value))
    return table


def history_table(history: Sequence[Mapping[str, Any]], title: str = "Epochs") -> Table:
    """A trial's epochs: the LR at the first and last step, every metric Keras logged (the
    names present in any epoch, loss first) and the seconds."""
    columns = metric_columns(history)
    table = Table(title=title, title_justify="left")
    for column in ("epoch", "lr first", "lr last", *columns, "seconds"):
        table.add_column(column, justify="right")
    for p in history:
        metrics = metrics_of(p)
        table.add_row(str(p["epoch"] + 1), _fmt(p.get("lr_first")), _fmt(p.get("lr_last")),
                      *(_fmt(metrics.get(name)) for name in columns),
                      "-" if p.get("seconds") is None else f"{p['seconds']:.1f}")
    return table


def print_best(best: Mapping[str, Any]) -> None:
    out = console()
    out.print(best_table(best))
    if best.get("history"):
        out.print(history_table(best["history"], f"Trial #{best['trial_number']} per epoch"))
    baseline = best.get("baseline")
    if baseline:
        lr = (baseline.get("params") or {}).get("lr")
        out.print(f"Against a tuned constant LR (single runs; lr={_fmt(lr)}: {best['metric']} "
                  f"{_fmt(baseline['value'])}): gain {_fmt(baseline['gain'])}; "
                  f"{baseline['verdict']}")
    if best.get("confirmation"):
        print_confirmation(best["confirmation"], best["metric"])
    if best.get("leaderboard"):
        board = Table(title="Best per family", title_justify="left")
        for column in ("family", best["metric"], "trial"):
            board.add_column(column)
        for row in best["leaderboard"]:
            board.add_row(row["family"], _fmt(row["value"]), str(row["trial_number"]))
        out.print(board)
    if best.get("snippet"):
        out.print("Use it in Keras:")
        out.print(Syntax(best["snippet"], "python", theme="ansi_dark", background_color="default"))
    elif best.get("note"):
        out.print(best["note"])


def print_confirmation(c: Mapping[str, Any], metric: str) -> None:
    """The confirmation's configurations (mean and std over fresh seeds) and its verdict."""
    out = console()
    if not c.get("configurations"):
        out.print(f"Confirmation: {c['status']}")
        return
    table = Table(title=f"Confirmation ({c['status']}): each configuration retrained with "
                  f"{c.get('seeds')} fresh seeds", title_justify="left")
    for column in ("trial", "family", "params", f"mean {metric}", "std", "runs"):
        table.add_column(column, overflow="fold")
    winner = (c.get("winner") or {}).get("slot")
    for row in c["configurations"]:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in (row["params"] or {}).items())
        mark = " (winner)" if row["slot"] == winner else ""
        which = "baseline " if row.get("role") == "baseline" else ""
        table.add_row(f"{which}#{row['trial_number']}{mark}", row["family"], params,
                      _fmt(row["mean"]), _fmt(row["std"]), f"{row['n']}/{len(row['runs'])}")
    out.print(table)
    gain = c.get("gain")
    if gain:
        interval = gain.get("ci95") or [None, None]
        out.print(f"Paired gain over the constant: {_fmt(gain['mean'])} (95 % interval "
                  f"{_fmt(interval[0])} to {_fmt(interval[1])}, {gain['n']} seeds); "
                  f"{gain['verdict']}")


def trial_label(t: Mapping[str, Any]) -> str:
    """A trial's number as the trials table shows it: the search's Optuna number, `baseline N`
    (the baseline's own Optuna study) or `confirms slot S` (a confirmation run)."""
    role = t.get("role", "search")
    if role == "baseline":
        return f"baseline {_fmt(t['number'])}"
    if role == "confirm":
        return f"confirms slot {t.get('confirms')}"
    return _fmt(t["number"])


def trials_table(trials: Sequence[Mapping[str, Any]], metric: str) -> Table:
    table = Table(title="Trials", title_justify="left")
    for column in ("slot", "#", "family", "state", metric, "params", "attempt", "seconds",
                   "reason"):
        table.add_column(column, overflow="fold")
    for t in trials:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in (t["params"] or {}).items())
        table.add_row(str(t["slot"]), trial_label(t), _fmt(t["family"]), t["state"],
                      _fmt(t["value"]), params, str(t["attempt"]),
                      "-" if t["duration_s"] is None else f"{t['duration_s']:.1f}",
                      t["failure_reason"] or "")
    return table


def studies_table(studies: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Studies", title_justify="left")
    for column in ("id", "name", "status", "families", "progress", "best", "created (UTC)"):
        table.add_column(column, overflow="fold")
    for s in studies:
        best = (s.get("best") or {}).get("value")
        table.add_row(s["id"], s["name"] or "", s["status"], ", ".join(s["families"]),
                      f"{finished(s)}/{slots(s)}", _fmt(best),
                      s["created_at"][:19].replace("T", " "))
    return table


def print_suggestions(suggestions: Mapping[str, Any], bounds: Mapping[str, Any] | None = None
                      ) -> None:
    table = Table(title="Suggested learning rates", title_justify="left")
    table.add_column("suggestion")
    table.add_column("lr", justify="right")
    table.add_column("repeats", justify="right")
    for key, value in suggestions.items():
        table.add_row(key, _fmt(value["median"]), str(value["n"]))
    out = console()
    out.print(table)
    if bounds:
        b = Table(title="Search bounds per family (submit with --range-test-id)",
                  title_justify="left")
        for column in ("family", "parameter", "low", "high"):
            b.add_column(column)
        for family, params in bounds.items():
            for name, r in params.items():
                b.add_row(family, name, _fmt(r["low"]), _fmt(r["high"]))
        out.print(b)
