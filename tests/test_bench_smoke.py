"""`make bench-smoke`: every benchmark runs end to end on tiny sizes (real service processes,
real training), so the scripts cannot rot. Nothing here asserts a timing: only that each
benchmark finished and wrote a well-formed result (positive ratios from paired repeats)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.run import BENCHMARKS

ROOT = Path(__file__).resolve().parent.parent


def test_every_benchmark_runs_in_smoke_mode(tmp_path: Path) -> None:
    env = {**os.environ, "LRSEARCH_BENCH_RESULTS": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    env = {k: v for k, v in env.items() if not k.startswith("LRSEARCH_") or k.endswith("RESULTS")}
    out = subprocess.run([sys.executable, "-m", "bench.run", "--smoke"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    for name in BENCHMARKS:
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert result["smoke"] is True and result["machine"]["cpus"] >= 1
        for figure in result["figures"]:
            assert figure["repeats"] >= 2
            if figure.get("reached", figure["repeats"]) == figure["repeats"]:  # B2: all reached
                assert 0 < figure["min"] <= figure["median"] <= figure["max"], figure
            else:
                assert figure["max"] is None, figure  # "never" is reported as such
    assert "BENCHMARKS.md updated" not in out.stdout  # smoke runs never touch the figures
