"""What `/best` concludes beyond the search's single best run: the gain over the best constant
LR, and, after a confirmation, each configuration's mean over fresh seeds.

Gains are signed so that positive means "the schedule is better", whatever the direction:
`value(schedule) - value(constant)` when maximizing, the reverse when minimizing.

The confirmation's interval is Student's t on paired differences: each confirmation seed j
trains every configuration, so d_j = sign * (winner_j - constant_j) removes the seed's own
luck from the comparison; the gain is mean(d) with the 95 % interval
mean(d) +- t(0.975, n-1) * sd(d) / sqrt(n), over the n seeds where both runs completed.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.schemas import finite_or_none
from service.studies.models import Study, Trial
from service.studies.roles import BASELINE_FAMILY, best_constant

NO_GAIN = "no schedule beat a tuned constant LR"
UNFINISHED = ("queued", "running")


def _t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with `df` degrees of freedom."""
    from scipy.stats import t  # scipy comes with scikit-learn

    return float(t.ppf(0.975, df))


def _sign(maximize: bool) -> float:
    return 1.0 if maximize else -1.0


def _verdict(gain: float, family: str, metric: str) -> str:
    if gain > 0:
        return f"the best schedule ({family}) beats the best constant LR by {gain:.4g} {metric}"
    return NO_GAIN


def baseline(session: Session, study: Study, best: Trial, metric: str, maximize: bool
             ) -> dict[str, Any] | None:
    """The best constant LR's single run against the search's best schedule (None: the study
    has no constant LR to compare with)."""
    constant = best_constant(session, study, maximize)
    if constant is None or constant.value is None:
        return None
    spec = study.spec.get("baseline") or {}
    out: dict[str, Any] = {"source": constant.role, "trials": spec.get("trials"),
                           "trial_number": constant.number, "slot": constant.slot,
                           "params": constant.params, "value": finite_or_none(constant.value)}
    if best.family == BASELINE_FAMILY:
        out.update(gain=0.0, verdict=NO_GAIN + " (the best trial is a constant LR)")
        return out
    assert best.value is not None
    gain = _sign(maximize) * (best.value - constant.value)
    out.update(gain=finite_or_none(gain), verdict=_verdict(gain, best.family or "", metric))
    return out


def _configuration(source: Trial | None, runs: list[Trial]) -> dict[str, Any]:
    values = [r.value for r in runs if r.state == "complete" and r.value is not None]
    return {"slot": runs[0].confirms, "trial_number": source.number if source else None,
            "role": source.role if source else None, "family": runs[0].family,
            "params": runs[0].params,
            "runs": [{"seed": r.seed, "state": r.state, "value": finite_or_none(r.value)}
                     for r in runs],
            "n": len(values),
            "mean": finite_or_none(statistics.fmean(values)) if values else None,
            "std": finite_or_none(statistics.stdev(values)) if len(values) >= 2 else None}


def _paired(winner: list[Trial], constant: list[Trial], maximize: bool) -> dict[str, Any]:
    by_seed = {r.seed: r.value for r in constant
               if r.state == "complete" and r.value is not None}
    diffs = [_sign(maximize) * (r.value - by_seed[r.seed]) for r in winner
             if r.state == "complete" and r.value is not None and r.seed in by_seed]
    out: dict[str, Any] = {"n": len(diffs), "mean": None, "std": None, "ci95": None}
    if diffs:
        out["mean"] = finite_or_none(statistics.fmean(diffs))
    if len(diffs) >= 2:
        sd = statistics.stdev(diffs)
        half = _t975(len(diffs) - 1) * sd / math.sqrt(len(diffs))
        out.update(std=finite_or_none(sd),
                   ci95=[finite_or_none(out["mean"] - half), finite_or_none(out["mean"] + half)])
    return out


def confirmation(session: Session, study: Study, metric: str, maximize: bool
                 ) -> dict[str, Any] | None:
    """The confirmation's configurations (mean and std over their seeds), the winner by mean
    among the configurations whose every run completed (a run that failed or diverged counts
    against its configuration: it cannot win on its lucky seeds), and its paired gain over the
    best constant LR with a 95 % t interval. None when the study asked for none. `status`:
    `pending` (the search runs), `running`, `finished` (every run ended), `stopped` (the study
    ended before every run did: cancelled or out of budget; partial figures), `skipped` (no
    run was queued; `reason` says why)."""
    if not study.spec.get("confirm"):
        return None
    rows = session.scalars(select(Trial).where(Trial.study_id == study.id,
                                               Trial.role == "confirm")
                           .order_by(Trial.slot)).all()
    if not rows:
        if study.status in ("queued", "running") and study.phase == "search":
            return {"status": "pending", "configurations": [], "winner": None, "gain": None}
        reason = study.stop_reason or ("cancelled" if study.status == "cancelled" else
                                       "no completed configuration to confirm")
        return {"status": "skipped", "reason": reason, "configurations": [], "winner": None,
                "gain": None}
    groups: dict[int, list[Trial]] = {}
    for r in rows:
        groups.setdefault(r.confirms if r.confirms is not None else -1, []).append(r)
    sources = {t.slot: t for t in session.scalars(select(Trial).where(
        Trial.study_id == study.id, Trial.slot.in_(list(groups))))}
    configs = [_configuration(sources.get(slot), runs) for slot, runs in groups.items()]
    unfinished = any(r.state in UNFINISHED for r in rows)
    if unfinished and study.status in ("queued", "running"):
        status = "running"
    else:
        status = "finished" if all(r.state in ("complete", "failed", "pruned")
                                   for r in rows) else "stopped"
    sign = _sign(maximize)

    def whole(c: dict[str, Any]) -> bool:  # every run of it completed
        return c["mean"] is not None and c["n"] == len(c["runs"]) and c["n"] >= 2

    schedules = [c for c in configs if c["family"] != BASELINE_FAMILY and whole(c)]
    constants = [c for c in configs if c["family"] == BASELINE_FAMILY and whole(c)]
    winner = max(schedules, key=lambda c: sign * c["mean"]) if schedules else None
    out: dict[str, Any] = {"status": status,
                           "seeds": study.spec["confirm"]["seeds"],
                           "configurations": configs, "winner": winner, "gain": None}
    if winner is not None and constants:
        gain = _paired(groups[winner["slot"]], groups[constants[0]["slot"]], maximize)
        interval = gain["ci95"]
        if gain["mean"] is None:
            verdict = "no seed completed both runs"
        elif interval is None:
            verdict = "too few seeds completed both runs for an interval"
        elif interval is not None and interval[0] is not None and interval[0] > 0:
            verdict = (f"the schedule beats the tuned constant LR by {gain['mean']:.4g} "
                       f"{metric} (95 % interval {interval[0]:.4g} to {interval[1]:.4g})")
        elif gain["mean"] > 0:
            verdict = ("the schedule's mean is better than the tuned constant LR's, but the "
                       "95 % interval includes no gain")
        else:
            verdict = NO_GAIN
        out["gain"] = {**gain, "constant": constants[0], "verdict": verdict}
    return out
