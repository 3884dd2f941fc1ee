"""Writes the results table of BENCHMARKS.md (between its `results` markers) from the JSON
files the benchmarks wrote. The prose around it (machine, analysis, profiles) is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import ROOT

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _n(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f}"  # null: a search that never reached


def _row(figure: dict[str, Any]) -> str:
    spread = (f"IQR {_n(figure['iqr'][0])}–{_n(figure['iqr'][1])}; " if "iqr" in figure
              else "")
    reached = (f" (reached {figure['reached']}/{figure['repeats']})" if "reached" in figure
               else "")
    return (f"| {figure['name']} | {figure['ratio']} | **{_n(figure['median'])}**{reached} | "
            f"{spread}range {_n(figure['min'])}–{_n(figure['max'])} | {figure['repeats']} | "
            f"{figure.get('target') or ''} |")


def table(results: Path) -> str:
    lines = ["| figure | ratio | median | spread | repeats | target |",
             "|---|---|---|---|---|---|"]
    extra = []
    machines: dict[str, list[str]] = {}  # a machine's description -> the benchmarks run on it
    for path in sorted(results.glob("b*.json")):
        data = json.loads(path.read_text())
        if data.get("smoke"):
            continue
        machines.setdefault(_machine(data["machine"]), []).append(path.stem.split("_")[0])
        for figure in data["figures"]:
            lines.append(_row(figure))
            if "fixed_cost_s_median" in figure:
                extra.append(f"- {figure['name']}: fixed per-trial cost "
                             f"{figure['fixed_cost_s_median']:.2f} s median "
                             f"({figure['fixed_cost_s_per_epoch_ms']:.1f} ms per epoch; trial "
                             f"{figure['numerator_median']:.2f} s, bare fit "
                             f"{figure['denominator_median']:.2f} s)")
            if "idle_p99_ms" in figure:
                extra.append(f"- B4b latency, {figure['clients']} clients polling once a second "
                             f"({figure.get('database', 'SQLite')}): idle p50 "
                             f"{figure['idle_p50_ms']:.1f} ms, p99 {figure['idle_p99_ms']:.1f} ms "
                             f"(target p99 <= 20 ms); busy p50 {figure['busy_p50_ms']:.1f} ms, "
                             f"p99 {figure['busy_p99_ms']:.1f} ms")
            if figure["name"].startswith(("B4a", "B4c")):
                extra.append(f"- {figure['name']}: {figure['numerator_median']:.0f} vs "
                             f"{figure['denominator_median']:.0f} requests/s (medians)")
            if "largest_ms_median" in figure:
                extra.append(f"- B7 largest allowed preview: {figure['largest_ms_median']:.1f} "
                             f"ms median (an ordinary one_cycle preview "
                             f"{figure['ordinary_ms_median']:.1f} ms)")
            if "numerator_median" in figure and figure["name"].startswith("B5"):
                extra.append(f"- B5 throughput: {figure['numerator_median']:.1f} trials/min "
                             f"with 2 workers, {figure['denominator_median']:.1f} with 1")
        if "grid" in data:
            g = data["grid"]
            retrained = [v for v in g.get("best_retrained") or [] if v is not None]
            mean = (f" (its configuration retrained with {len(retrained)} fresh seeds: mean "
                    f"{sum(retrained) / len(retrained):.4f})") if retrained else ""
            extra.append(f"- B2 grid: {g['configurations']} configurations, {g['epochs']} "
                         f"epochs, best val_accuracy {g['best']:.4f}{mean}, target "
                         f"{g['target']:.4f}")
            for figure in data["figures"]:
                epochs = ", ".join(str(r["epochs"]) if r["reached"]
                                   else f"{r['epochs']} (not reached)" for r in figure["runs"])
                extra.append(f"  - {figure['name'].split(': ')[1]}: epochs per seed {epochs}, "
                             f"reached {figure['reached']}/{figure['repeats']}"
                             f"{_b2_profile(figure['runs'])}")
        if "quality" in data:
            extra.extend(_b2_quality(data["quality"]))
        if "schedule_matters" in data:
            extra.extend(f"- {line}" if i == 0 else f"  - {line}"
                         for i, line in enumerate(b8_lines(data)))
    for described, names in machines.items():
        # Benchmarks measured on different machines say which ran where.
        which = f" ({', '.join(n.upper() for n in names)})" if len(machines) > 1 else ""
        extra.append(f"- Machine{which}: {described}")
    return "\n".join([*lines, "", *extra])


def _b2_profile(runs: list[dict[str, Any]]) -> str:
    """Where a B2 arm's epochs went, summed over its seeds up to each one's target: trials per
    seed, epochs by how long a trial trained and, for Hyperband arms, by bracket/rung. Empty
    for results written before runs had a profile."""
    if not runs or "profile" not in runs[0]:
        return ""
    trials = ", ".join(str(r["trials"]) for r in runs)
    lengths: dict[str, int] = {}
    groups: dict[str, int] = {}
    for r in runs:
        for table, rows in ((lengths, r["profile"]["by_length"]),
                            (groups, r["profile"].get("by_group", {}))):
            for key, row in rows.items():
                table[key] = table.get(key, 0) + row["epochs"]
    full = sum(r["profile"]["epochs_full"] for r in runs)
    spent = sum(r["epochs"] for r in runs)
    text = (f"; trials per seed {trials}; {full} of {spent} epochs in fully trained trials; "
            "epochs by trial length: " + ", ".join(
                f"{k} epochs {v}" for k, v in sorted(lengths.items(), key=lambda kv: int(kv[0]))))
    if groups:
        text += "; by bracket: " + ", ".join(f"{k} {v}" for k, v in sorted(groups.items()))
    return text


def _b2_quality(quality: dict[str, Any]) -> list[str]:
    """B2's retrained quality as bullet lines: per arm, per budget, the mean val_accuracy of
    the searches' picks retrained with unseen seeds, with std, min and max of all
    retrainings."""

    def n(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [f"- B2 retrained quality: val_accuracy of each search's best fully trained "
             f"configuration after B epochs, retrained for {quality['epochs']} epochs with "
             f"{len(quality['retrain_seeds'])} unseen seeds (mean over search seeds; std, "
             f"min–max over all retrainings)"]
    for label, rows in quality["arms"].items():
        shown = "; ".join(
            f"B={q['budget']}: {n(q['mean'])} (std {n(q['std'])}, {n(q['min'])}–{n(q['max'])}"
            + (f", {q['missing']} searches without a pick" if q["missing"] else "") + ")"
            for q in rows)
        lines.append(f"  - {label}: {shown}")
    return lines


def _params(params: dict[str, Any]) -> str:
    """A configuration compactly: floats to 3 significant digits."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def b8_lines(data: dict[str, Any]) -> list[str]:
    """B8's results (bench/b8_schedule_matters.py) as lines, the heading first: each arm's
    tuned configuration and its fresh-seed mean and std, each family's paired gain over the
    constant with its 95 % t interval, what each replayed pruner pruned, and the rank
    correlations of early values with the final one. The benchmark prints the same lines."""

    def n(value: float | None, digits: int = 4) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    def pp(value: float | None, sign: str = "+") -> str:
        return "-" if value is None else f"{100 * value:{sign}.2f} pp"

    details, prune = data["schedule_matters"], data["pruning"]
    seeds = len(details["retrain_seeds"])
    lines = [f"B8 schedule matters: each arm's best tuning configuration retrained with {seeds} "
             f"fresh seeds (final val_accuracy, mean and std over seeds); gains paired by seed"]
    for family, arm in details["arms"].items():
        failed = f", {arm['failed']} failed" if arm["failed"] else ""
        lines.append(f"{family} ({_params(arm['params'])}; tuning value "
                     f"{n(arm['tuning_value'])}): {n(arm['mean'])} (std {n(arm['std'])}{failed})")
    for family, g in details["gains"].items():
        ci = g["ci95"]
        interval = f"95 % t interval {pp(ci[0])} to {pp(ci[1])}" if ci else "no interval"
        best = " (the best schedule)" if family == details["best_schedule"] else ""
        lines.append(f"gain of {family}{best} over the constant: {pp(g['mean'])} (std "
                     f"{pp(g['std'], '')}, {interval}, {g['pairs']} seeds); the constant's "
                     f"seed std {pp(details['noise_std'], '')}")
    trials = prune["trials"]
    replayed = (f"replayed on {len(trials)} cross-family random trials trained to the end "
                f"({sum(t['final'] is None for t in trials)} failed)")
    for label, r in prune["replays"].items():
        top = ", ".join(f"top {k} {v['pruned']}/{v['of']}" for k, v in r["top"].items())
        families = ", ".join(f"{f} {v['pruned']}/{v['trials']}"
                             for f, v in r["by_family"].items())
        lines.append(f"pruner {label}, {replayed}: pruned {r['pruned']}/{r['trials']} "
                     f"({families}); of the final "
                     f"{top}; epochs {r['epochs_trained']} of {r['epochs_unpruned']} "
                     f"({r['epochs_saved']} saved); best kept {n(r['best_kept'])}, best of "
                     f"all {n(r['best_overall'])}")
    corr = prune["correlations"]
    half = max(1, prune["epochs"] // 2) if "epochs" in prune else None
    marks = ", ".join(f"{e} (half)" if int(e) == half else str(e) for e in corr["epochs"])
    lines.append(f"Spearman rho of the value after epochs {marks} with the final value, over "
                 "the trials that finished (count): " + "; ".join(
                     f"{name} ({g['trials']}) " + "/".join(n(rho, 2) for rho in g["rho"].values())
                     for name, g in corr["groups"].items()))
    return lines


def _machine(machine: dict[str, Any]) -> str:
    return (f"{machine.get('cpu', '?')}, {machine['cpus']} CPUs, "
            f"{machine.get('memory_gib', '?')} GiB, GPUs: "
            f"{', '.join(machine['gpus']) or 'none'}; Python {machine['python']}, "
            + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()))


def write(results: Path) -> None:
    doc = ROOT / "BENCHMARKS.md"
    text = doc.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{START}\n{table(results)}\n{END}{tail}")
