"""Our suggestions named after fastai's rules are fastai's: every case of the reference file
(computed by fastai 2.8.12's own `valley`, `slide`, `minimum` and `steep`, on real and
generated sweeps, from the ladder LRs, the smoothed losses and `num_it`) gives fastai's values
to within float rounding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lrsearch.range_test.suggest import suggest

REFERENCE = Path(__file__).with_name("fastai_suggestions.json")  # see its "source"
CASES: list[dict[str, Any]] = json.loads(REFERENCE.read_text())["cases"]
OURS = {"valley": "valley", "slide": "slide", "minimum": "minimum_div10", "steep": "steepest"}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_fastai_rules_give_fastais_values(case: dict[str, Any]) -> None:
    smoothed = [float("nan") if v is None else v for v in case["smoothed"]]  # null: NaN
    got = suggest(case["lrs"], smoothed, case["num_it"]).as_dict()
    for theirs, ours in OURS.items():
        want = case["fastai"].get(theirs)
        if want is None:
            assert got[ours] is None, (theirs, got)
        else:
            assert got[ours] == pytest.approx(want, rel=1e-6), (theirs, got[ours], want)


def test_the_reference_covers_every_rule() -> None:
    assert len(CASES) >= 3
    assert {k for c in CASES for k, v in c["fastai"].items() if v is not None} >= set(OURS)
