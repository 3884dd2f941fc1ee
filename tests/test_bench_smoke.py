"""`make bench-smoke`: every benchmark runs end to end on tiny sizes (real service processes,
real training), so the scripts cannot rot. Nothing here asserts a timing: only that each
benchmark finished and wrote a well-formed result (positive ratios from paired repeats)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu import GPU_BENCHMARKS
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


# The GPU tier's smoke run, on the CPU, on every Keras backend installed. JAX (the lent GPU
# machine's) runs the whole tier; TensorFlow and PyTorch run the training path's two (B1, B3),
# where the backends differ: B5's workers differ only by `--backend`, which
# tests/worker/test_per_gpu.py starts on JAX.
@pytest.mark.parametrize(("backend", "only"), [("jax", ""), ("tensorflow", "b1,b3"),
                                               ("torch", "b1,b3")])
def test_the_gpu_tier_runs_in_smoke_mode(tmp_path: Path, backend: str, only: str) -> None:
    pytest.importorskip(backend)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.update(LRSEARCH_BENCH_RESULTS=str(tmp_path), CUDA_VISIBLE_DEVICES="",
               KERAS_BACKEND=backend)
    out = subprocess.run([sys.executable, "-m", "bench.run", "--gpu", "--smoke",
                          *(["--only", only] if only else [])], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    ran = [n for n in GPU_BENCHMARKS if not only or n.split("_")[1] in only.split(",")]
    for name in ran:
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert result["smoke"] is True and result["machine"]["keras_backend"] == backend
        assert result["figures"], name
        for figure in result["figures"]:
            assert figure["repeats"] >= 2 and 0 < figure["min"] <= figure["max"], figure
    assert "GPU tier, backend " + backend in (tmp_path / "gpu.md").read_text()
