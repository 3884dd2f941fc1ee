"""B2's comparison (every arm, the same rules: bench/b2_search_efficiency.py) on B8's problem,
where the schedule matters: the generated 10-class problem, the mlp, plain SGD, 15 epochs,
step_decay with lr0 0.01..1 (log). `--seeds`, `--arms` and `--smoke` as B2's, except that the
smoke run takes one arm of each kind (ours, KerasTuner's, Optuna's) unless `--arms` names
others: B2's own smoke run covers every arm, and this one checks the generated problem."""

from __future__ import annotations

from typing import Any

from bench import b2_search_efficiency as b2
from bench.common import command_line

SMOKE_ARMS = "default,kt-hyperband,optuna-hyperband"


def main(smoke: bool = False, seeds: int = 5, arms: str = "") -> dict[str, Any]:
    if smoke and not arms:
        arms = SMOKE_ARMS
    return b2.main(smoke=smoke, seeds=seeds, arms=arms, problem="generated")


if __name__ == "__main__":
    command_line(main, __doc__, repeats=None, seeds=(int, 5, "search seeds"),
                 arms=(str, "", f"comma-separated arms (default all): {', '.join(b2.ARMS)}"))
