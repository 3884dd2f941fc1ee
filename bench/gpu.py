"""What the GPU tier's benchmarks share (`python -m bench.run --gpu`, BENCHMARKS.md): the
generated 32x32x3 problem, the backend they run on, the precision and XLA arms, and the
summary the tier prints at its end.

The tier is written for a lent GPU machine that has JAX (or PyTorch) but no TensorFlow and no
package registry: everything here trains through the library's worker path
(`lrsearch.training.train`, `lrsearch.range_test.runner.run`, `lrsearch worker`), which picks
its data path by Keras' backend, and nothing imports TensorFlow itself. KERAS_BACKEND chooses
the backend, as it does for a worker (`lrsearch worker --backend`); each benchmark runs in its
own process, so the GPU is free when the next one starts.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS

DATASET = "gpu_generated"
CLASSES = 10
SHAPE = (32, 32, 3)
# The GPU tier's results, one JSON file per benchmark beside the CPU tier's (whose table in
# BENCHMARKS.md reads only b*.json, so these never enter it).
GPU_BENCHMARKS = ("gpu_b1_precision", "gpu_b3_range_test", "gpu_b5_sharing")


def backend() -> str:
    """The Keras backend this run uses: KERAS_BACKEND, else TensorFlow (Keras' default)."""
    return os.environ.get("KERAS_BACKEND") or "tensorflow"


def write_problem(folder: Path, train: int, val: int, seed: int = 0) -> Path:
    """A 10-class problem of 32x32x3 images as an .npz upload (x_train, y_train, x_val,
    y_val): each class a fixed random template, each image its class's template plus noise, so
    that a ResNet learns it in a few epochs and every arm trains the same numbers."""
    rng = np.random.default_rng(seed)
    templates = rng.normal(0.0, 1.0, (CLASSES, *SHAPE)).astype(np.float32)
    y = rng.integers(0, CLASSES, train + val)
    x = 0.5 * templates[y] + rng.normal(0.0, 1.0, (train + val, *SHAPE)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{DATASET}.npz"
    np.savez(path, x_train=x[:train], y_train=y[:train].astype(np.int64), x_val=x[train:],
             y_val=y[train:].astype(np.int64))
    return path


@dataclass(frozen=True)
class Arm:
    """One way to train: Keras' mixed precision on or off, XLA (`jit_compile`) on or off; the
    RunSpec fields of the same names (lrsearch.runtime)."""

    mixed_precision: bool
    jit_compile: bool

    @property
    def label(self) -> str:
        return (f"{'mixed precision' if self.mixed_precision else 'fp32'}, "
                f"XLA {'on' if self.jit_compile else 'off'}")


def arms(name: str) -> list[Arm]:
    """The arms a backend runs: fp32 and mixed precision, each with XLA on and off. On
    PyTorch `jit_compile=True` is torch.compile rather than XLA (Keras' "auto" never picks it),
    so PyTorch runs XLA off only."""
    jit = (False,) if name == "torch" else (True, False)
    return [Arm(mp, j) for j in jit for mp in (False, True)]


def run_spec(path: Path, model: str, batch_size: int, arm: Arm) -> Any:
    """Every training's RunSpec: `model` on the generated problem, plain SGD."""
    from lrsearch.spec import RunSpec

    base = RunSpec.builtin(DATASET, model, optimizer="sgd", batch_size=batch_size, seed=0,
                           dataset_file=str(path))
    return RunSpec.model_validate({**base.model_dump(), "mixed_precision": arm.mixed_precision,
                                   "jit_compile": arm.jit_compile})


def summary(results: Path = RESULTS) -> str:
    """The GPU tier's figures as a Markdown table (written to gpu.md beside the results)."""
    lines = ["| figure | ratio | median | range | repeats | device |", "|---|---|---|---|---|---|"]
    notes: list[str] = []
    for name in GPU_BENCHMARKS:
        path = results / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        device = ", ".join(data["machine"].get("gpus") or []) or "no GPU (CPU)"
        for f in data["figures"]:
            lines.append(f"| {f['name']} | {f['ratio']} | **{f['median']:.3f}** | "
                         f"{f['min']:.3f}–{f['max']:.3f} | {f['repeats']} | {device} |")
        notes.extend(f"- {n}" for n in data.get("notes", []))
    smoke = " (smoke sizes: not figures)" if any(
        json.loads((results / f"{n}.json").read_text()).get("smoke")
        for n in GPU_BENCHMARKS if (results / f"{n}.json").exists()) else ""
    head = f"GPU tier, backend {backend()}{smoke}, {time.strftime('%Y-%m-%d')}"
    return "\n".join([head, "", *lines, "", *notes, ""])
