"""What each trial slot of a study is for, and the confirmation runs that follow a search.

A study's slots, in order:

- `search`: slots 0 .. n_trials-1, the schedule search (Optuna study `optuna_study_name`);
- `baseline`: the next `spec["baseline"]["trials"]` slots tune a constant LR with the same
  optimizer, model and data, in an Optuna study of their own (`<optuna_study_name>.baseline`),
  so the search's sampler never sees them and Optuna's `best_params` stays the search's;
- `confirm`: once every search and baseline slot has ended (and `spec["confirm"]` asks for
  it), the top k search configurations and the best constant LR are retrained for the full
  epochs with `seeds` fresh seeds each. Their trial rows are written here, before any worker
  runs them (family, parameters, seed, and `confirms`: the slot they retrain), and their jobs
  are ordinary trial jobs (leases, retries, curves); Optuna never hears of them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from service.db import utcnow
from service.jobs.models import Job
from service.studies.models import Study, Trial

BASELINE_FAMILY = "constant"
BASELINE_SUFFIX = ".baseline"  # the baseline's Optuna study: "<optuna_study_name>.baseline"
CONFIRM_SEED_OFFSET = 1_000_000  # confirmation seeds: study seed + 10^6 + j, apart from trials'
SEED_LIMIT = 2**31  # RunSpec seeds are 31-bit


def baseline_trials(spec: dict[str, Any]) -> int:
    """How many baseline slots the study has (0: no baseline)."""
    baseline = spec.get("baseline") or {}
    return int(baseline.get("trials") or 0)


def role_of(study: Study, slot: int) -> str:
    """The role of `slot` in `study` (slot ranges as in the module docstring)."""
    if slot < study.n_trials:
        return "search"
    if slot < study.n_trials + baseline_trials(study.spec):
        return "baseline"
    return "confirm"


def optuna_name(study: Study, slot: int) -> str:
    """The Optuna study a slot's trial numbers belong to: the search's, or the baseline's
    (confirmation runs have none; their rows carry no number)."""
    suffix = BASELINE_SUFFIX if role_of(study, slot) == "baseline" else ""
    return study.optuna_study_name + suffix


def job_order(n_trials: int, baseline: int) -> list[int]:
    """The order a new study's slots are queued in (workers claim a tenant's jobs oldest
    first): the baseline's slots spread evenly through the search's, so that a budget that
    stops the study part-way leaves both with their share of the work, and the comparison
    with the constant is not lost to a budget."""
    order: list[int] = []
    done = 0  # search slots placed so far
    for b in range(baseline):  # baseline slot b after the first ~(b+1) n / (nb+1) search slots
        upto = max(done, round((b + 1) * n_trials / (baseline + 1)))
        order += [*range(done, upto), n_trials + b]
        done = upto
    return [*order, *range(done, n_trials)]


def baseline_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The study spec the baseline's slots sample from: the same run, sampler and pruner, one
    family (`constant`) over the baseline's LR range."""
    return {**spec, "families": [BASELINE_FAMILY],
            "search_space": {BASELINE_FAMILY: (spec.get("baseline") or {}).get(
                "search_space", {})}}


def confirm_seed(study_seed: int, j: int) -> int:
    """The j-th confirmation seed: the same for every configuration (so their differences are
    paired by seed), and apart from the search's trial seeds (study seed + trial number)."""
    return (study_seed + CONFIRM_SEED_OFFSET + j) % SEED_LIMIT


def ranked(session: Session, study: Study, role: str, maximize: bool,
           family: str | None = None) -> list[Trial]:
    """Complete trials of one role with a value, best first (ties: earlier slot). Values are
    stored finite or NULL (progress._clean), so every one returned is finite."""
    where = [Trial.study_id == study.id, Trial.role == role, Trial.state == "complete",
             Trial.value.is_not(None)]
    if family is not None:
        where.append(Trial.family == family)
    sign = -1.0 if maximize else 1.0
    return sorted(session.scalars(select(Trial).where(*where)),
                  key=lambda t: (sign * (t.value or 0.0), t.slot))


def best_constant(session: Session, study: Study, maximize: bool) -> Trial | None:
    """The best constant-LR trial: the baseline's, else (a study searching `constant` itself)
    the search's best `constant` trial."""
    for role in ("baseline", "search"):
        best = ranked(session, study, role, maximize, family=BASELINE_FAMILY)
        if best:
            return best[0]
    return None


def to_confirm(session: Session, study: Study, maximize: bool) -> list[Trial]:
    """The configurations a confirmation retrains: the top k distinct search configurations
    that are not a constant LR, then the best constant LR (when the study has one)."""
    top_k = int((study.spec.get("confirm") or {}).get("top_k", 0))
    chosen: list[Trial] = []
    seen: set[str] = set()
    for trial in ranked(session, study, "search", maximize):
        key = f"{trial.family}:{sorted((trial.params or {}).items())}"
        if trial.family == BASELINE_FAMILY or key in seen:
            continue
        seen.add(key)
        chosen.append(trial)
        if len(chosen) == top_k:
            break
    constant = best_constant(session, study, maximize)
    return chosen + ([constant] if constant is not None else [])


def start_confirmation(session: Session, study: Study, maximize: bool) -> int:
    """Queue the confirmation runs of a study whose search (and baseline) slots have all
    ended; returns how many were queued (0: none asked for, or nothing to confirm). The study
    row is locked by the caller; it stays running until they end."""
    confirm = study.spec.get("confirm")
    if not confirm or study.phase != "search":
        return 0
    study.phase = "confirm"  # once: a study with nothing to confirm does not try again
    sources = to_confirm(session, study, maximize)
    if not sources:
        return 0
    seeds = int(confirm["seeds"])
    base = int(study.spec["run"].get("seed", 0))
    first = study.n_slots or study.n_trials
    now = utcnow()
    rows = []
    for i, source in enumerate(sources):
        for j in range(seeds):
            rows.append({"study_id": study.id, "slot": first + i * seeds + j,
                         "family": source.family, "params": source.params, "state": "queued",
                         "attempt": 0, "seed": confirm_seed(base, j), "role": "confirm",
                         "confirms": source.slot, "started_at": now})
    session.execute(insert(Trial), rows)
    session.execute(insert(Job), [
        {"kind": "trial", "tenant": study.tenant, "study_id": study.id, "slot": r["slot"],
         "state": "queued", "attempt": 0, "cancel_requested": False, "created_at": now,
         "updated_at": now} for r in rows])
    study.n_slots = first + len(rows)
    study.n_queued += len(rows)
    return len(rows)
