"""What the command line prints: rich tables, the progress display, PNG files, JSON options,
and the files `lrsearch export` writes.

Tables that can outgrow a terminal (trials, studies, a trial's epochs, the confirmation, the
best schedule's parameters) are *fitted*: each is a `View` whose cells never wrap (one line per
row; a long text cell ends in "…"), numbers show 4 significant digits, and the columns that do
not fit the console's width are left out, named in one line under the table; `--wide` shows
every column whole, however wide. A parameter with one value in every listed row of its family
is shown once above the table (`fixed: ...`) instead of in a column (`split_params`).

The essential columns are never cut to nothing: on a narrow terminal a column that may be cut
(a trial's family) is cut down to its least width, then the essential columns a view may spare
go (the family first), and when even the rest do not fit, the rows are printed as lines of
`header=value` items instead of a table (`record_lines`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import click
from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from lrsearch.durations import duration_text
from lrsearch.errors import LRSearchError
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
    """A value as the tables show it: numbers with 4 significant digits (integers whole),
    lists item by item, None as "-"."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


# -- fitted tables -------------------------------------------------------------------------
ELLIPSIS = "…"
PARAM_CAP = 24  # a parameter's cell (a list, a long choice) in a fitted view
TEXT_CAP = 40  # a free-text cell: a failure reason, a study's name or families
FAMILY_CAP = 16  # a family's name (a plugin's may be long) in a fitted view
FAMILY_LEAST = 6  # ... cut down to this on a narrow terminal before it is left out
HEADER_CAP = 16  # a header wider than this gives way to the column's short one in a fitted view
WIDE_HINT = "--wide"


def _one_line(text: str) -> str:
    """Text for a one-line cell: runs of whitespace (newlines in a failure reason) become one
    space."""
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    """`text` cut to `limit` terminal cells, ending in "…" when it was longer."""
    if cell_len(text) <= limit:
        return text
    return set_cell_size(text, max(0, limit - 1)) + ELLIPSIS


@dataclass(frozen=True)
class Column:
    """One column of a fitted table. `key` names it (unique in its table), `cells` are its
    rows as text (one line each), `cap` is the widest it is shown in a fitted view (a longer
    cell ends in "…"; `--wide` shows it whole; never narrower than the header). `short`: the
    header a fitted view shows instead of `header` when that is wider than HEADER_CAP (the
    value column's "value" for a long metric name, which the title names). `least`: the
    narrowest a fitted view may cut its cells to (never below the header) when the essential
    columns do not fit otherwise; None: never cut below `cap`."""

    key: str
    header: str
    cells: tuple[str, ...]
    justify: Literal["left", "right"] = "left"
    cap: int | None = None
    short: str | None = None
    least: int | None = None

    def __post_init__(self) -> None:
        for name in ("cap", "least"):
            limit = getattr(self, name)
            if limit is not None and limit < 1:
                raise ValueError(f"Column {self.key!r}: {name} must be at least 1, got {limit}")

    @property
    def blank(self) -> bool:
        """No row has a value in it."""
        return all(cell in ("", "-") for cell in self.cells)

    def capped(self) -> Column:
        """As a fitted view shows it: the short header if the header is too wide, the cells
        cut to `cap` (or the header's width, if wider)."""
        column = self
        if self.short is not None and cell_len(self.header) > HEADER_CAP:
            column = replace(column, header=self.short)
        if self.cap is None:
            return column
        limit = max(self.cap, cell_len(column.header))
        return replace(column, cells=tuple(_clip(cell, limit) for cell in column.cells))

    def floor(self) -> int:
        """The narrowest a fitted view may show it: its least width (never below the
        header's), or its whole width when it has none."""
        if self.least is None:
            return self.width()
        return min(self.width(), max(self.least, cell_len(self.header)))

    def cut(self, limit: int) -> Column:
        """Its cells cut to `limit` cells (never below floor()), a longer one ending in "…"."""
        limit = max(limit, self.floor())
        return replace(self, cells=tuple(_clip(cell, limit) for cell in self.cells))

    def width(self) -> int:
        """Its natural width in terminal cells: the widest of the header and the cells."""
        return max([cell_len(self.header), *(cell_len(cell) for cell in self.cells)])


@dataclass
class View:
    """A table to fit into a console's width. `columns` are in display order, and each key is
    in one tier: `essential` columns are always shown; `ranked` ones are shown in that order
    while they fit, and the first that does not fit ends them (a gap in the middle of a ranked
    list would mislead); `extras` are shown only when every ranked column was, each when it
    fits, in that order (the first is the last to go; an extra with no value in any row is
    left out without a mention). `expendable`: the essential columns that may go, in that
    order, when the essential ones do not fit even cut to their least widths (fit). `notes`
    are printed between the title and the table."""

    title: str | None
    columns: list[Column]
    essential: list[str]
    ranked: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    expendable: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        keys = [c.key for c in self.columns]
        tiers = [*self.essential, *self.ranked, *self.extras]
        if len(set(keys)) != len(keys) or sorted(keys) != sorted(tiers):
            raise ValueError(f"View {self.title!r}: every column key must be in exactly one "
                             f"tier; columns {keys}, tiers {tiers}")
        spare = [key for key in self.expendable if key not in self.essential]
        if spare or len(set(self.expendable)) != len(self.expendable) \
                or len(self.expendable) >= len(self.essential):
            raise ValueError(f"View {self.title!r}: expendable {self.expendable} must be "
                             f"distinct essential columns ({self.essential}), not all of them")
        rows = {len(c.cells) for c in self.columns}
        if len(rows) > 1:
            raise ValueError(f"View {self.title!r}: columns have different row counts {rows}")


@lru_cache(maxsize=64)
def _overhead(n: int) -> int:
    """What rich's default table adds to the widths of `n` unwrapped columns: edges,
    separators and padding (measured, not assumed)."""
    if n == 0:
        return 0
    table = Table()
    for _ in range(n):
        table.add_column("x", no_wrap=True)
    probe = Console(width=80)
    return Measurement.get(probe, probe.options.update_width(10**6), table).maximum - n


def table_width(columns: Sequence[Column]) -> int:
    """How many terminal cells a table of these columns takes, unwrapped."""
    return sum(c.width() for c in columns) + _overhead(len(columns))


def _squeeze(columns: Sequence[Column], width: int) -> list[Column] | None:
    """These columns cut, those that may be (Column.least) from the first, each only as far
    as the table must shrink to fit `width`; None when they do not fit even so."""
    excess = table_width(columns) - width
    out = list(columns)
    for index, column in enumerate(out):
        if excess <= 0:
            break
        spare = column.width() - column.floor()
        if spare > 0:
            take = min(spare, excess)
            out[index] = column.cut(column.width() - take)
            excess -= take
    return out if excess <= 0 else None


def _essentials(view: View, capped: Mapping[str, Column], width: int
                ) -> tuple[list[Column], list[Column], bool]:
    """(kept, dropped, whole): the essential columns at `width`. All of them as capped when
    they fit (whole: True); else cut as far as needed (_squeeze); else without the expendable
    ones, one by one in View.expendable order, the rest cut as needed. When even the columns
    no view may spare do not fit, every essential column as capped and none dropped: wider
    than `width`, which print_view takes for the sign to print them as lines."""
    essentials = [capped[key] for key in view.essential]
    if table_width(essentials) <= width:
        return essentials, [], True
    remaining, dropped = essentials, []
    for key in [None, *view.expendable]:
        if key is not None:
            dropped.append(capped[key])
            remaining = [c for c in remaining if c.key != key]
        squeezed = _squeeze(remaining, width)
        if squeezed is not None:
            return squeezed, dropped, False
    return essentials, [], False


def fit(view: View, width: int) -> tuple[list[Column], list[Column]]:
    """(shown, left out): the columns of `view` that fit `width` terminal cells, capped and in
    display order, by the tier rules of View; and those left out, in the order they were
    dropped from. When the essential columns do not fit as capped, they are cut, then the
    expendable ones go (_essentials), and no other column is shown (one beside a cut or
    missing essential column would mislead); when even those no view may spare do not fit,
    `shown` is every essential column and wider than `width` (print_view prints the rows as
    lines then), never a column cut to nothing."""
    capped = {c.key: c.capped() for c in view.columns}
    kept, dropped, full_width = _essentials(view, capped, width)
    full = not full_width
    for key in [*view.ranked, *view.extras]:
        column = capped[key]
        if key in view.extras and column.blank:
            continue
        if not full and table_width([*kept, column]) <= width:
            kept.append(column)
            continue
        dropped.append(column)
        full = full or key in view.ranked
    shown = {c.key: c for c in kept}
    return [shown[c.key] for c in view.columns if c.key in shown], dropped


def record_lines(columns: Sequence[Column], width: int) -> list[str]:
    """The rows as lines, for a width too narrow for a table of `columns`: per row, the items
    `header=cell` of every column in order, two spaces apart on one line while they fit, the
    next on a new line indented by two spaces. The first item is never cut (a study's id is
    what the other commands take: printed whole even wider than `width`); another wider than
    a line of its own ends in "…"."""
    lines: list[str] = []
    for row in zip(*(c.cells for c in columns), strict=True):
        items = [f"{c.header}={cell}" for c, cell in zip(columns, row, strict=True)]
        line = items[0]
        for item in items[1:]:
            if cell_len(line) + 2 + cell_len(item) <= width:
                line = f"{line}  {item}"
            else:
                lines.append(line)
                line = "  " + _clip(item, max(1, width - 2))
        lines.append(line)
    return lines


def render(columns: Sequence[Column], title: str | None = None) -> Table:
    """A rich table of these columns, one line per row (no_wrap; "…" if rich must cut)."""
    table = Table(title=Text(title) if title else None, title_justify="left")
    for c in columns:
        table.add_column(Text(c.header), justify=c.justify, no_wrap=True, overflow="ellipsis")
    for row in zip(*(c.cells for c in columns), strict=True):
        table.add_row(*(Text(cell) for cell in row))
    return table


def print_view(view: View, wide: bool = False, out: Console | None = None) -> list[Column]:
    """Print the title, the notes, the table and, when columns were left out, one line naming
    them. When even the essential columns do not fit (fit), the rows are printed as lines of
    `header=value` items instead of the table (record_lines). `wide`: every column whole, the
    console widened to the table (nothing wraps; a terminal may fold the long lines itself).
    Returns the columns left out."""
    out = out or console()
    dropped: list[Column] = []
    if wide:
        shown = list(view.columns)
    else:
        shown, dropped = fit(view, out.width)
    previous = out.width
    if wide:
        out.width = max(previous, table_width(shown))
    try:
        if view.title:
            out.print(Text(view.title, style="bold"), soft_wrap=wide)
        for note in view.notes:
            out.print(Text(note), soft_wrap=wide)
        if not wide and table_width(shown) > previous:
            # too narrow for a table of the essential columns: a line per row instead of
            # columns that rich would cut to nothing
            for line in record_lines(shown, previous):
                out.print(Text(line), soft_wrap=True)
        else:
            out.print(render(shown))
        if dropped:
            names = ", ".join(c.header for c in dropped)
            out.print(Text(f"left out to fit the terminal's {previous} columns: {names}; "
                           f"{WIDE_HINT} shows every column"), soft_wrap=False)
    finally:
        out.width = previous
    return dropped


# -- parameters as columns -----------------------------------------------------------------
@lru_cache(maxsize=128)
def _declared(family: str) -> tuple[str, ...]:
    """A family's parameter names in the order the library declares them (its peak or base LR
    first); none for a family this library does not know (a worker's plugin)."""
    from lrsearch import schedules

    try:
        return tuple(p["name"] for p in schedules.spec(family)["parameters"])
    except LRSearchError:
        return ()


def param_order(family: str, seen: Iterable[str]) -> list[str]:
    """The names in `seen` in the family's declaration order, then the undeclared ones in the
    order seen."""
    names = list(dict.fromkeys(seen))
    declared = [n for n in _declared(family) if n in names]
    return declared + [n for n in names if n not in declared]


def _same(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


_ABSENT = object()


@dataclass
class ParamSplit:
    """The parameters of listed rows (trials, configurations) split for a table.

    `searched`: the names that take more than one value among the rows of some family, one
    column each, in priority order: by position in the family's declaration (every family's
    first parameter, then every family's second, ...), ties by the family's first row. Two
    families with the same name share the column (the row's family tells whose it is; a row
    whose family lacks the name shows "-"), so a cross-family table has the union of the
    searched names and never more columns than that.
    `constant`: per family (in order of first row), the parameters with one value in each of
    its rows that are not columns, shown once in a note. `rows`: rows per family."""

    searched: list[str]
    constant: dict[str, dict[str, Any]]
    rows: dict[str, int]

    def notes(self, what: str = "trial") -> list[str]:
        """`fixed: one_cycle: cycle_momentum=True, base_momentum=0.85` per family; a family
        with one listed row reads `params: cosine (1 trial): peak_lr=0.1` (nothing varied)."""
        lines = []
        for family, params in self.constant.items():
            if not params:
                continue
            shown = ", ".join(f"{name}={_fmt(value)}" for name, value in params.items())
            if self.rows[family] > 1:
                lines.append(f"fixed: {family}: {shown}")
            else:
                lines.append(f"params: {family} (1 {what}): {shown}")
        return lines


def split_params(rows: Sequence[Mapping[str, Any]]) -> ParamSplit:
    """Split the `params` of rows that have a `family` (see ParamSplit); rows without a family
    or params yet (queued trials) take no part."""
    by_family: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("family") and isinstance(row.get("params"), Mapping):
            by_family.setdefault(str(row["family"]), []).append(row["params"])
    rank: dict[str, tuple[int, int]] = {}
    constant: dict[str, dict[str, Any]] = {}
    for index, (family, params) in enumerate(by_family.items()):
        constant[family] = {}
        names = param_order(family, (name for p in params for name in p))
        for position, name in enumerate(names):
            if len({_same(p.get(name, _ABSENT)) for p in params}) > 1:
                rank[name] = min(rank.get(name, (position, index)), (position, index))
            else:
                constant[family][name] = params[0][name]
    searched = sorted(rank, key=lambda name: rank[name])
    for family in constant:
        constant[family] = {k: v for k, v in constant[family].items() if k not in rank}
    return ParamSplit(searched, constant, {f: len(p) for f, p in by_family.items()})


def _param_cells(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[Column]:
    return [Column(f"param.{name}", name, tuple(
        _fmt((row.get("params") or {})[name]) if name in (row.get("params") or {}) else "-"
        for row in rows), "right", PARAM_CAP) for name in names]


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


def eta_text(study: Mapping[str, Any]) -> str:
    """"ETA about ..." from the study's `eta_seconds` (the server's estimate); "" when it has
    none (no trial finished yet, or the study has ended)."""
    eta = study.get("eta_seconds")
    return f"ETA about {duration_text(eta)}" if isinstance(eta, int | float) else ""


def progress_line(study: Mapping[str, Any]) -> str:
    c = study["counts"]
    best = study.get("best") or {}
    metric = objective_metric(study)
    shown = f", best {metric} {best['value']:.4f}" if best.get("value") is not None else ""
    eta = eta_text(study)
    return (f"{study['status']}: {finished(study)}/{slots(study)} trials finished "
            f"({c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed), "
            f"{c['running']} running{shown}{', ' + eta if eta else ''}")


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
            eta = eta_text(study)
            self.bar.update(self.task, completed=finished(study), total=slots(study),
                            best=f"{study['status']} {text}{'  ' + eta if eta else ''}")
            return
        line = progress_line(study)
        if line != self.last:
            self.out.print(line)
            self.last = line

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def objective_direction(study: Mapping[str, Any]) -> str:
    """`maximize` or `minimize`: the request's `objective.direction` (or the flat `direction`
    of older requests); when it gave none, the direction the server inferred from the metric's
    name (lrsearch.spec.infer_direction), else maximize."""
    request = study.get("request") or {}
    objective = request.get("objective")
    direction = (objective.get("direction") if isinstance(objective, Mapping) else None) \
        or request.get("direction")
    if direction in ("maximize", "minimize"):
        return str(direction)
    from lrsearch.spec import infer_direction

    return infer_direction(objective_metric(study)) or "maximize"


def rank_trials(trials: Sequence[Mapping[str, Any]], direction: str = "maximize"
                ) -> list[Mapping[str, Any]]:
    """Best first: complete trials by value in the study's direction, then the other trials
    that have a value (pruned: their last reported one), then those without one (failed,
    running, queued); ties by slot."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(t: Mapping[str, Any]) -> tuple[int, float, int]:
        value = t.get("value")
        if value is None:
            return 2, 0.0, int(t["slot"])
        return (0 if t.get("state") == "complete" else 1), sign * float(value), int(t["slot"])

    return sorted(trials, key=key)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def trials_view(trials: Sequence[Mapping[str, Any]], metric: str,
                direction: str = "maximize", title: str | None = None) -> View:
    """The trials table: best first (rank_trials); always the label (#), family (cut to
    FAMILY_CAP), state and value (headed by the metric's name, or "value" when that is wider
    than HEADER_CAP: the title names the metric); then one column per searched parameter
    (split_params: a shared name is one column, blank "-" where a row's family lacks it; the
    fixed ones are noted once above) while they fit; then the failure reason, slot, seconds and
    attempt while they fit. On a narrow terminal the family is cut further, then left out,
    before the label, state or value are (fit). The title is `title` ("Trials, best first" by
    default) followed by "(metric, direction)"."""
    rows = rank_trials(trials, direction)
    split = split_params(rows)
    params = _param_cells(rows, split.searched)
    columns = [
        Column("slot", "slot", tuple(str(t["slot"]) for t in rows), "right"),
        Column("#", "#", tuple(trial_label(t) for t in rows)),
        Column("family", "family", tuple(_fmt(t.get("family")) for t in rows),
               cap=FAMILY_CAP, least=FAMILY_LEAST),
        Column("state", "state", tuple(str(t["state"]) for t in rows)),
        Column("value", metric, tuple(_fmt(t.get("value")) for t in rows), "right",
               short="value"),
        *params,
        Column("attempt", "attempt", tuple(str(t.get("attempt", "-")) for t in rows), "right"),
        Column("seconds", "seconds", tuple(_seconds(t.get("duration_s")) for t in rows),
               "right"),
        Column("reason", "reason", tuple(_one_line(t.get("failure_reason") or "")
                                         for t in rows), cap=TEXT_CAP),
    ]
    return View(f"{title or 'Trials, best first'} ({metric}, {direction})", columns,
                essential=["#", "family", "state", "value"],
                ranked=[c.key for c in params],
                extras=["reason", "slot", "seconds", "attempt"],
                notes=split.notes("trial"), expendable=["family"])


def studies_view(studies: Sequence[Mapping[str, Any]]) -> View:
    """The list of studies: always the id (whole, however narrow the terminal: the other
    commands take the whole id, no prefix of it) and status; progress (finished/slots) and the
    best value unless the terminal is too narrow (best goes first); then the name, families and
    creation time while they fit (name and families end in "…" past TEXT_CAP). Narrower than
    the id and status (under about 50 columns), each study is printed as lines instead:
    `id=...` whole, then `status=... progress=... best=...` (record_lines)."""
    def best(s: Mapping[str, Any]) -> str:
        return _fmt((s.get("best") or {}).get("value"))

    columns = [
        Column("id", "id", tuple(str(s["id"]) for s in studies)),
        Column("name", "name", tuple(_one_line(s.get("name") or "") for s in studies),
               cap=TEXT_CAP),
        Column("status", "status", tuple(str(s["status"]) for s in studies)),
        Column("families", "families", tuple(", ".join(s["families"]) for s in studies),
               cap=TEXT_CAP),
        Column("progress", "progress", tuple(f"{finished(s)}/{slots(s)}" for s in studies),
               "right"),
        Column("best", "best", tuple(best(s) for s in studies), "right"),
        Column("created", "created (UTC)", tuple(str(s["created_at"])[:19].replace("T", " ")
                                                 for s in studies)),
    ]
    return View("Studies", columns, essential=["id", "status", "progress", "best"],
                extras=["name", "families", "created"], expendable=["best", "progress"])


def study_table(study: Mapping[str, Any]) -> Table:
    """One study, a field per line: short values (progress and best on lines of their own)
    so that it fits a terminal; an error message wraps inside its column, never cut."""
    c = study["counts"]
    best = study.get("best") or {}
    rows = [("id", study["id"]), ("name", study.get("name")), ("status", study["status"]),
            ("families", ", ".join(study["families"])), ("dataset", study["dataset"]),
            ("objective", f"{objective_metric(study)}, {objective_direction(study)}"),
            ("progress", f"{finished(study)}/{slots(study)} finished: {c['complete']} "
                         f"complete, {c['pruned']} pruned, {c['failed']} failed, "
                         f"{c['running']} running")]
    if best.get("value") is not None:
        rows.append(("best", f"{_fmt(best['value'])} (trial #{best.get('trial_number')}, "
                             f"{best.get('family')})"))
    if study.get("error"):
        rows.append(("error", study["error"]))
    if study.get("stop_reason"):
        rows.append(("stopped early", study["stop_reason"]))
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True, style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, Text(_fmt(value)))
    return table


def best_view(best: Mapping[str, Any]) -> View:
    """The best schedule's parameters, a row each, under a title that says how it was
    measured."""
    how = "mean of the confirmation's seeds" if best.get("answer") == "confirmed" else \
        "a single run"
    params = best.get("params") or {}
    names = param_order(str(best.get("family")), params)
    return View(f"Best schedule: {best['family']} (trial #{best['trial_number']}, "
                f"{best['metric']} {_fmt(best['value'])}, {how})",
                [Column("parameter", "parameter", tuple(names)),
                 Column("value", "value", tuple(_fmt(params[n]) for n in names), "right")],
                essential=["parameter", "value"])


def history_view(history: Sequence[Mapping[str, Any]], title: str = "Epochs",
                 metric: str | None = None) -> View:
    """A trial's epochs: the epoch and the LR at its first and last step always; every metric
    Keras logged (the names present in any epoch, loss first, each before its val_ twin) while
    they fit, the objective `metric` the last to go; then the seconds."""
    names = metric_columns(history)
    points = [metrics_of(p) for p in history]
    metrics = [Column(f"metric.{name}", name, tuple(_fmt(m.get(name)) for m in points),
                      "right") for name in names]
    ranked = sorted((c.key for c in metrics), key=lambda key: key != f"metric.{metric}")
    columns = [Column("epoch", "epoch", tuple(str(p["epoch"] + 1) for p in history), "right"),
               Column("lr first", "lr first", tuple(_fmt(p.get("lr_first")) for p in history),
                      "right"),
               Column("lr last", "lr last", tuple(_fmt(p.get("lr_last")) for p in history),
                      "right"),
               *metrics,
               Column("seconds", "seconds", tuple(_seconds(p.get("seconds")) for p in history),
                      "right")]
    return View(title, columns, essential=["epoch", "lr first", "lr last"], ranked=ranked,
                extras=["seconds"])


def confirmation_view(c: Mapping[str, Any], metric: str) -> View:
    """The confirmation's configurations: which trial (the winner marked), family, mean and
    std over the fresh seeds and the runs that completed; the searched parameters in columns
    while they fit, the others noted once (split_params)."""
    configs = list(c.get("configurations") or [])
    split = split_params(configs)
    params = _param_cells(configs, split.searched)
    winner = (c.get("winner") or {}).get("slot")

    def label(row: Mapping[str, Any]) -> str:
        which = "baseline " if row.get("role") == "baseline" else ""
        mark = " (winner)" if row["slot"] == winner else ""
        return f"{which}#{row['trial_number']}{mark}"

    columns = [Column("trial", "trial", tuple(label(r) for r in configs)),
               Column("family", "family", tuple(_fmt(r.get("family")) for r in configs),
                      cap=FAMILY_CAP, least=FAMILY_LEAST),
               *params,
               Column("mean", f"mean {metric}", tuple(_fmt(r.get("mean")) for r in configs),
                      "right", short="mean"),
               Column("std", "std", tuple(_fmt(r.get("std")) for r in configs), "right"),
               Column("runs", "runs", tuple(f"{r['n']}/{len(r['runs'])}" for r in configs),
                      "right")]
    return View(f"Confirmation ({c['status']}): each configuration retrained with "
                f"{c.get('seeds')} fresh seeds ({metric})", columns,
                essential=["trial", "family", "mean", "std", "runs"],
                ranked=[p.key for p in params], notes=split.notes("configuration"),
                expendable=["family"])


def leaderboard_view(best: Mapping[str, Any]) -> View:
    board = best.get("leaderboard") or []
    return View(f"Best per family ({best['metric']})", [
        Column("family", "family", tuple(str(r["family"]) for r in board), cap=FAMILY_CAP,
               least=FAMILY_LEAST),
        Column("value", best["metric"], tuple(_fmt(r["value"]) for r in board), "right",
               short="value"),
        Column("trial", "trial", tuple(str(r["trial_number"]) for r in board), "right")],
        essential=["family", "value", "trial"])


def print_best(best: Mapping[str, Any], wide: bool = False) -> None:
    """Everything `lrsearch best` shows: the parameters, the best trial's epochs, the gain over
    the constant, the confirmation, the leaderboard and the Keras snippet (fitted tables;
    `wide`: every column)."""
    out = console()
    print_view(best_view(best), wide, out)
    if best.get("history"):
        print_view(history_view(best["history"], f"Trial #{best['trial_number']} per epoch",
                                best["metric"]), wide, out)
    baseline = best.get("baseline")
    if baseline:
        lr = (baseline.get("params") or {}).get("lr")
        out.print(f"Against a tuned constant LR (single runs; lr={_fmt(lr)}: {best['metric']} "
                  f"{_fmt(baseline['value'])}): gain {_fmt(baseline['gain'])}; "
                  f"{baseline['verdict']}", soft_wrap=False)
    if best.get("confirmation"):
        print_confirmation(best["confirmation"], best["metric"], wide)
    if best.get("leaderboard"):
        print_view(leaderboard_view(best), wide, out)
    if best.get("snippet"):
        out.print("Use it in Keras:")
        out.print(Syntax(best["snippet"], "python", theme="ansi_dark", background_color="default"))
    elif best.get("note"):
        out.print(best["note"])


def print_confirmation(c: Mapping[str, Any], metric: str, wide: bool = False) -> None:
    """The confirmation's configurations (mean and std over fresh seeds) and its verdict."""
    out = console()
    if not c.get("configurations"):
        out.print(f"Confirmation: {c['status']}")
        return
    print_view(confirmation_view(c, metric), wide, out)
    gain = c.get("gain")
    if gain:
        interval = gain.get("ci95") or [None, None]
        out.print(f"Paired gain over the constant: {_fmt(gain['mean'])} (95 % interval "
                  f"{_fmt(interval[0])} to {_fmt(interval[1])}, {gain['n']} seeds); "
                  f"{gain['verdict']}", soft_wrap=False)


def trial_label(t: Mapping[str, Any]) -> str:
    """A trial's number as the trials table shows it: the search's Optuna number, `baseline N`
    (the baseline's own Optuna study) or `confirms slot S` (a confirmation run)."""
    role = t.get("role", "search")
    if role == "baseline":
        return f"baseline {_fmt(t['number'])}"
    if role == "confirm":
        return f"confirms slot {t.get('confirms')}"
    return _fmt(t["number"])


# -- export --------------------------------------------------------------------------------
EXPORT_FIELDS = ("role", "slot", "number", "confirms", "family", "state", "value", "attempt",
                 "seed", "duration_s", "failure_reason", "epochs")


def export_records(trials: Sequence[Mapping[str, Any]],
                   histories: Mapping[int, Sequence[Mapping[str, Any]] | None]
                   ) -> list[dict[str, Any]]:
    """One record per trial, in the order given: EXPORT_FIELDS (`epochs`: how many epochs its
    history has), `params` (every parameter) and `metrics` (every metric Keras logged in its
    last epoch, None where not finite). `histories` maps a slot to the trial's history; a
    slot absent or None there (a confirmation run, which the API serves no history for, or a
    trial not started) has `epochs` None and no metrics."""
    records = []
    for t in trials:
        history = histories.get(int(t["slot"]))
        record: dict[str, Any] = {name: t.get(name) for name in EXPORT_FIELDS}
        record["role"] = t.get("role") or "search"
        record["epochs"] = None if history is None else len(history)
        record["params"] = dict(t.get("params") or {})
        record["metrics"] = metrics_of(history[-1]) if history else {}
        records.append(record)
    return records


def export_json(records: Sequence[Mapping[str, Any]]) -> str:
    """The records as a JSON list of objects (params and metrics nested)."""
    return json.dumps(list(records), indent=2) + "\n"


def export_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """The records as CSV with a header row: EXPORT_FIELDS, then `param.<name>` per parameter
    (families in order of first appearance, each in its declaration order), then
    `metric.<name>` per metric (loss first, each before its val_ twin). An empty cell is a
    missing value; a list or object parameter is written as JSON."""
    seen: dict[str, list[str]] = {}
    for r in records:
        seen.setdefault(str(r.get("family")), []).extend(r["params"])
    params = list(dict.fromkeys(name for family, names in seen.items()
                                for name in param_order(family, names)))
    metrics = metric_columns({"metrics": r["metrics"]} for r in records)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*EXPORT_FIELDS, *(f"param.{n}" for n in params),
                     *(f"metric.{n}" for n in metrics)])
    for r in records:
        writer.writerow([*(_cell(r.get(name)) for name in EXPORT_FIELDS),
                         *(_cell(r["params"].get(n)) for n in params),
                         *(_cell(r["metrics"].get(n)) for n in metrics)])
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value


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
