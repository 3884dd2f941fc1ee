"""B7, the largest allowed preview: `POST /v1/schedules/piecewise/preview` with the most the
default limits let one request ask for (1000 boundaries, the family's cap; 10^6 steps,
LRSEARCH_MAX_PREVIEW_STEPS; and as many points as LRSEARCH_MAX_CURVE_EVALUATIONS allows with
1001 pieces: 9990) against an ordinary preview (one_cycle, 1000 points over the same steps),
both through a real API process, one request at a time. The figure is the ratio of their
latencies; the largest preview's own latency is reported beside it.

A second figure times the curve itself in the library, for the same 1000-boundary schedule at
the same 9990 steps: binary search over the knots (what previews and exports run) against one
`where` per knot (the Keras form, which is what previews ran before): the work the evaluation
cap bounds, and what the binary search saves.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.common import Ratio, command_line, interleave, service, write_result

STEPS_PER_EPOCH, EPOCHS = 10_000, 100  # 10^6 steps: the default LRSEARCH_MAX_PREVIEW_STEPS
BOUNDARIES = 1000  # lrsearch.schedules.piecewise.MAX_BOUNDARIES
EVALUATIONS = 10_000_000  # the default LRSEARCH_MAX_CURVE_EVALUATIONS
POINTS = EVALUATIONS // (BOUNDARIES + 1)


def piecewise() -> dict[str, Any]:
    """The largest piecewise schedule a request may carry: 1000 boundaries inside the run."""
    return {"boundaries_epochs": [(i + 1) * EPOCHS / (BOUNDARIES + 1) for i in range(BOUNDARIES)],
            "values": [0.1 / (1 + i / 100) for i in range(BOUNDARIES + 1)],
            "interpolation": "linear"}


def library_figure(repeats: int) -> dict[str, Any]:
    from lrsearch.schedules import sample_steps, validate
    from lrsearch.schedules.piecewise import Piecewise

    family, timeline = validate("piecewise", piecewise(), steps_per_epoch=STEPS_PER_EPOCH,
                                epochs=EPOCHS)
    assert isinstance(family, Piecewise)
    steps = sample_steps(timeline.total_steps, POINTS).astype(np.float64)

    def timed(evaluate: Any) -> float:
        start = time.perf_counter()
        evaluate()
        return time.perf_counter() - start

    ratio = Ratio(f"B7 piecewise curve ({BOUNDARIES} boundaries, {POINTS} steps), binary "
                  "search / one where per knot", "binary search (np.searchsorted)",
                  "one where per knot (the Keras form)")
    rows = interleave(repeats, lambda: timed(lambda: family.indexed(steps, timeline)),
                      lambda: timed(lambda: family.unrolled(steps, timeline, np)))
    ratio.pairs = [(a, b) for a, b in rows]
    print(ratio.line())
    return ratio.summary()


def main(smoke: bool = False, repeats: int = 7) -> list[dict[str, Any]]:
    repeats = 2 if smoke else repeats
    largest = {"params": piecewise(), "epochs": EPOCHS, "steps_per_epoch": STEPS_PER_EPOCH,
               "points": POINTS}
    ordinary = {"params": {"max_lr": 0.1}, "epochs": EPOCHS, "steps_per_epoch": STEPS_PER_EPOCH,
                "points": 1000}
    ratio = Ratio(f"B7 largest allowed preview (piecewise, {BOUNDARIES} boundaries, 10^6 steps, "
                  f"{POINTS} points) / an ordinary one (one_cycle, 1000 points)",
                  "largest allowed preview", "one_cycle preview")
    with service() as svc, svc.http() as h:
        def post(family: str, body: dict[str, Any]) -> float:
            start = time.perf_counter()
            r = h.post(f"/v1/schedules/{family}/preview", json=body)
            seconds = time.perf_counter() - start
            r.raise_for_status()
            return seconds

        post("piecewise", largest)  # warm the API's code paths
        post("one_cycle", ordinary)
        over = h.post("/v1/schedules/piecewise/preview", json={**largest, "points": POINTS + 1})
        assert over.status_code == 422 and over.json()["field"] == "points", over.text
        rows = interleave(repeats, lambda: post("piecewise", largest),
                          lambda: post("one_cycle", ordinary))
    ratio.pairs = [(a, b) for a, b in rows]
    summary = ratio.summary()
    summary["largest_ms_median"] = 1000 * summary["numerator_median"]
    summary["ordinary_ms_median"] = 1000 * summary["denominator_median"]
    print(ratio.line())
    print(f"  largest allowed preview {summary['largest_ms_median']:.1f} ms median, ordinary "
          f"{summary['ordinary_ms_median']:.1f} ms")
    figures = [summary, library_figure(repeats)]
    write_result("b7_preview_cost", {"figures": figures}, smoke)
    return figures


if __name__ == "__main__":
    command_line(main, __doc__)
