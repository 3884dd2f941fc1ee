"""PNG plots of studies, range tests and schedules (matplotlib, headless, no pyplot).

Every function takes the plain data the API returns (so the server, the CLI and a notebook draw
the same picture) and returns a `Figure`; `png(fig)` renders it. Figures are built with
`matplotlib.figure.Figure` and the Agg canvas, never with pyplot's global state, so the API
can draw from several threads at once.

Titles carry user text (a study's name): they are drawn with `parse_math=False`, so a `$` is
a dollar sign, never the start of matplotlib mathtext (an unbalanced one would fail the draw).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from lrsearch import schedules
from lrsearch.history import epoch_value
from lrsearch.schedules.base import registry

SUGGESTION_STYLE = {"steepest": ("tab:red", "steepest"),
                    "minimum_div10": ("tab:green", "minimum / 10"),
                    "valley": ("tab:orange", "valley"),
                    "slide": ("tab:purple", "slide"),
                    "lr_at_minimum": ("tab:gray", "LR at minimum")}


def png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _empty(fig: Figure, ax: Any, message: str) -> Figure:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


CURVE_POINTS = 1000  # steps drawn per schedule: a plot is a few hundred pixels wide


def trial_lr_curve(trial: Mapping[str, Any], steps_per_epoch: int, epochs: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(epoch as a float, LR) of a trial at up to CURVE_POINTS steps: the family's closed form
    (only those steps are computed, however long the training), or for an adaptive family the
    LR it applied at each epoch (from its history)."""
    family, params = trial["family"], trial["params"] or {}
    if not registry.get(family).adaptive:
        steps, lrs = schedules.sampled_curve(family, params, steps_per_epoch=steps_per_epoch,
                                             epochs=epochs, points=CURVE_POINTS)
        return steps / steps_per_epoch, lrs
    history = trial.get("history") or []
    x = np.array([p["epoch"] for p in history], dtype=float)
    return x, np.array([p["lr_first"] or np.nan for p in history], dtype=float)


def study_lr_curves(trials: Sequence[Mapping[str, Any]], *, metric: str, direction: str,
                    epochs: int, top: int = 5, title: str = "") -> Figure:
    """The LR schedules of the `top` best complete trials (top panel) over their per-epoch
    curves of the study's objective `metric` (bottom panel; any metric Keras logged), one
    colour per trial. `trials` carry `history`."""
    fig = Figure(figsize=(8, 6.5), layout="constrained")
    lr_ax, val_ax = fig.subplots(2, 1, sharex=True)
    sign = -1.0 if direction == "maximize" else 1.0
    ranked = sorted((t for t in trials if t.get("state") == "complete"
                     and t.get("value") is not None and t.get("family")),
                    key=lambda t: sign * t["value"])[:top]
    if not ranked:
        return _empty(fig, lr_ax, "No completed trial yet.")
    colors = [f"C{i}" for i in range(10)]
    for i, t in enumerate(ranked):
        color = colors[i % 10]
        spe = t.get("steps_per_epoch") or 1
        x, lr = trial_lr_curve(t, spe, epochs)
        label = f"#{t['number']} {t['family']} ({metric} {t['value']:.4g})"
        lr_ax.plot(x, lr, color=color, label=label)
        history = t.get("history") or []
        points = [(p["epoch"] + 1, value) for p in history
                  if (value := epoch_value(p, metric)) is not None]
        if points:
            ex, ev = zip(*points, strict=True)
            val_ax.plot(ex, ev, "o-", color=color, markersize=3)
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_yscale("log")
    lr_ax.legend(fontsize=8, loc="best")
    lr_ax.set_title(title or f"Top {len(ranked)} trials: schedules and {metric} per epoch",
                    parse_math=False)
    val_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    val_ax.set_xlabel("epoch")
    val_ax.set_ylabel(metric)
    val_ax.grid(alpha=0.3)
    lr_ax.grid(alpha=0.3, which="both")
    return fig


def study_history(trials: Sequence[Mapping[str, Any]], *, metric: str, direction: str,
                  title: str = "") -> Figure:
    """Optimization history: each finished trial's value by trial number (pruned trials show
    their last reported value, hollow) and the best value so far."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    done = sorted((t for t in trials if t.get("number") is not None
                   and t.get("value") is not None and t.get("state") in ("complete", "pruned")),
                  key=lambda t: t["number"])
    if not done:
        return _empty(fig, ax, "No finished trial yet.")
    for state, face, edge in (("complete", "C0", "C0"), ("pruned", "none", "C1")):
        chosen = [t for t in done if t["state"] == state]
        if chosen:
            ax.scatter([t["number"] for t in chosen], [t["value"] for t in chosen],
                       label=state, facecolors=face, edgecolors=edge)
    better = max if direction == "maximize" else min
    best: list[float] = []
    xs: list[int] = []
    for t in done:
        if t["state"] != "complete":
            continue
        best.append(t["value"] if not best else better(best[-1], t["value"]))
        xs.append(t["number"])
    if best:
        ax.step(xs, best, where="post", color="C3", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Optimization history", parse_math=False)
    return fig


def leaderboard(entries: Sequence[Mapping[str, Any]], *, metric: str, title: str = "") -> Figure:
    """The best value per family of a cross-family study, best first (top)."""
    fig = Figure(figsize=(8, 0.9 + 0.45 * max(1, len(entries))), layout="constrained")
    ax = fig.subplots()
    entries = [e for e in entries if e.get("value") is not None]
    if not entries:
        return _empty(fig, ax, "No completed trial yet.")
    names = [e["family"] for e in entries][::-1]
    values = [e["value"] for e in entries][::-1]
    bars = ax.barh(names, values, color="C0")
    ax.bar_label(bars, labels=[f"{v:.4g}" for v in values], padding=3, fontsize=8)
    low, high = min(values), max(values)
    pad = (high - low) * 0.15 or abs(high) * 0.05 or 0.05
    ax.set_xlim(low - pad, high + pad)  # zoomed in: the families often differ by little
    ax.set_xlabel(metric)
    ax.set_title(title or "Best trial per schedule family", parse_math=False)
    return fig


def range_test(result: Mapping[str, Any], title: str = "") -> Figure:
    """The LR finder picture: smoothed loss (raw loss faint) against the LR on a log axis,
    one line per repeat, with the suggested LRs marked (the medians over repeats)."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    sweeps = result.get("sweeps") or []
    if not sweeps:
        return _empty(fig, ax, "No curve yet.")
    smoothed_all: list[float] = []
    for i, sweep in enumerate(sweeps):
        lrs = np.asarray(sweep["lrs"], dtype=float)
        raw = np.asarray([np.nan if v is None else v for v in sweep["losses"]], dtype=float)
        smoothed = np.asarray([np.nan if v is None else v for v in sweep["smoothed"]],
                              dtype=float)
        ax.plot(lrs, raw, color=f"C{i % 10}", alpha=0.2, linewidth=0.8)
        ax.plot(lrs, smoothed, color=f"C{i % 10}",
                label="smoothed loss" if i == 0 else None)
        smoothed_all += _finite(smoothed.tolist())
    for key, value in (result.get("suggestions") or {}).items():
        lr = value.get("median") if isinstance(value, Mapping) else value
        if lr is None or key not in SUGGESTION_STYLE:
            continue
        color, label = SUGGESTION_STYLE[key]
        ax.axvline(lr, color=color, linestyle="--", linewidth=1, label=f"{label}: {lr:.3g}")
    ax.set_xscale("log")
    if smoothed_all:  # the divergence spike would flatten the interesting part
        low, high = min(smoothed_all), float(np.percentile(smoothed_all, 95))
        ax.set_ylim(low - 0.05 * (high - low + 1e-12), high + 0.25 * (high - low + 1e-12))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title or "LR range test", parse_math=False)
    return fig


def schedule(family: str, params: Mapping[str, Any], *, epochs: int, steps_per_epoch: int
             ) -> Figure:
    """One family's LR per step (its closed form)."""
    lrs = schedules.curve(family, dict(params), steps_per_epoch=steps_per_epoch, epochs=epochs)
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.arange(len(lrs)) / steps_per_epoch, lrs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in params.items())
    ax.set_title(f"{family}({shown})" if shown else family, parse_math=False)
    return fig


def param_importances(result: Mapping[str, Any], title: str = "") -> Figure:
    """Parameter importance per family, as GET /v1/studies/{id}/importance gives it
    (`importances`: family -> parameter -> share, `trials`, `reasons`): one panel of
    horizontal bars per family, most important parameter on top; the families left out are
    named with their reason below the panels."""
    importances = {f: p for f, p in (result.get("importances") or {}).items() if p}
    reasons = result.get("reasons") or {}
    rows = [len(p) for p in importances.values()]
    fig = Figure(figsize=(8, 1.4 + sum(0.35 * max(2, n) + 0.6 for n in rows)
                          + 0.25 * len(reasons)), layout="constrained")
    if not importances:
        why = "; ".join(f"{f}: {r}" for f, r in reasons.items())
        return _empty(fig, fig.subplots(), f"No parameter importance yet. {why}")
    axes = fig.subplots(len(importances), 1, squeeze=False,
                        height_ratios=[max(2, n) for n in rows])[:, 0]
    trials = result.get("trials") or {}
    for ax, (family, params) in zip(axes, importances.items(), strict=True):
        names = list(params)[::-1]
        values = [params[n] for n in names]
        bars = ax.barh(names, values, color="C0")
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3, fontsize=8)
        ax.set_xlim(0, 1.1)
        ax.set_title(f"{family} ({trials.get(family, '?')} complete trials)", fontsize=10,
                     parse_math=False)
        ax.grid(alpha=0.3, axis="x")
    axes[-1].set_xlabel("fANOVA importance (share of the objective's variance)")
    if reasons:
        fig.supxlabel("\n".join(f"{f}: {r}" for f, r in reasons.items()), fontsize=8,
                      parse_math=False)
    fig.suptitle(title or "Parameter importance", parse_math=False)
    return fig


PARAM_STATES = {"complete": ("o", "C0", "complete"), "pruned": ("v", "C1", "pruned (no value)"),
                "failed": ("x", "C3", "failed (no value)")}


def _choice_positions(values: Sequence[Any], choices: Sequence[Any] | None) -> dict[Any, int]:
    ordered = list(choices) if choices else sorted({str(v) for v in values})
    return {str(c): i for i, c in enumerate(ordered)}


def _range_axis(ax: Any, xs: Sequence[float], param: Mapping[str, Any]) -> None:
    """The x axis of a range parameter: its searched range (widened to any value outside it),
    on a log scale where it is searched on one, with four labelled ticks (a log axis's own
    minor labels collide on a range under a decade)."""
    low = min([v for v in (param.get("low"), *xs) if v is not None], default=None)
    high = max([v for v in (param.get("high"), *xs) if v is not None], default=None)
    if low is None or high is None or not low < high:
        return
    if param.get("log") and low > 0:
        ax.set_xscale("log")
        ticks = np.geomspace(low, high, 4)
        ax.set_xticks(ticks, [f"{t:.0f}" if 1 <= t < 1e4 else f"{t:.2g}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(low / (high / low) ** 0.05, high * (high / low) ** 0.05)
    else:
        pad = (high - low) * 0.05
        ax.set_xlim(low - pad, high + pad)


def param_values(families: Sequence[Mapping[str, Any]], *, metric: str, title: str = ""
                 ) -> Figure:
    """One scatter per searched parameter, a row per family: the parameter's value (x, on a
    log axis where it is searched on one; a choice's values spread as categories) against the
    trial's objective value (y). `families`: each with `family`, `params` (each `name`, `log`,
    `choices` for a categorical one, else the searched range `low`, `high`: the x axis spans
    it) and `trials` (each `params`, `state`, `value`, as GET /v1/studies/{id}/trials lists
    them). Pruned and failed trials have no objective value: they are marked along the bottom
    of the panel, where their parameter value was."""
    families = [f for f in families if f.get("params")]
    n_cols = max((len(f["params"]) for f in families), default=1)
    fig = Figure(figsize=(max(8.0, 2.8 * n_cols), 0.8 + 2.6 * max(1, len(families))),
                 layout="constrained")
    if not any(f.get("trials") for f in families):
        return _empty(fig, fig.subplots(), "No finished search trial with parameters yet.")
    axes = fig.subplots(len(families), n_cols, squeeze=False)
    legend: dict[str, Any] = {}
    for row, family in zip(axes, families, strict=True):
        for ax in row[len(family["params"]):]:
            ax.set_visible(False)
        trials = [t for t in family.get("trials") or [] if t.get("state") in PARAM_STATES
                  and isinstance(t.get("params"), Mapping)]
        for ax, param in zip(row, family["params"], strict=False):
            name = param["name"]
            chosen = [t for t in trials if t["params"].get(name) is not None]
            categorical = param.get("choices") is not None
            position = _choice_positions([t["params"][name] for t in chosen],
                                         param.get("choices")) if categorical else {}

            def x_of(t: Mapping[str, Any], name: str = name,
                     position: Mapping[Any, int] = position) -> float:
                value = t["params"][name]
                return float(position[str(value)]) if position else float(value)

            for state, (marker, color, label) in PARAM_STATES.items():
                mine = [t for t in chosen if t["state"] == state
                        and (state != "complete" or t.get("value") is not None)]
                if not mine:
                    continue
                if state != "complete":
                    ax.set_ymargin(0.2)  # room under the values for the marks without one
                xs = [x_of(t) for t in mine]
                if state == "complete":
                    handle = ax.scatter(xs, [t["value"] for t in mine], marker=marker,
                                        color=color, s=18, label=label)
                else:  # no value: a mark along the bottom edge, at the parameter's value
                    handle = ax.scatter(xs, [0.03] * len(xs), marker=marker, color=color, s=22,
                                        transform=ax.get_xaxis_transform(), label=label,
                                        clip_on=False)
                legend.setdefault(label, handle)
            if categorical:
                ax.set_xticks(list(position.values()), list(position), fontsize=8)
                ax.set_xlim(-0.5, max(len(position) - 0.5, 0.5))
            else:
                _range_axis(ax, [x_of(t) for t in chosen], param)
            ax.set_xlabel(name, parse_math=False)
            ax.grid(alpha=0.3, which="both")
            ax.tick_params(labelsize=8)
        row[0].set_ylabel(f"{family['family']}\n{metric}", parse_math=False)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside lower center",
                   ncols=len(legend), fontsize=8)
    fig.suptitle(title or "Parameters against the objective", parse_math=False)
    return fig
