"""A dataset reference is streamed, not loaded: a trial on an image folder of about 315 MB once
decoded (1,600 images of 128x128x3 float32) peaks, in the worker's child process, within 150 MB
of the same trial on a 10 MB folder (52 images). Both trials run in the real child
(`worker.child.main`, spawned by the worker's `Executor`), same model, batch size, seed and
image size; the peak is the child's VmHWM, read from /proc while it is still alive. Loading the
large folder into memory would alone add its 315 MB, twice over once TensorFlow copies it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from lrsearch import models
from lrsearch.datasets.references import ImageFolder, parse_roots
from lrsearch.datasets.register import register
from lrsearch.spec import BuiltinModel, DataRef, RunSpec
from tests.datasets.data_files import write_image_folder
from worker.executor import Executor

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SIZE = (128, 128)
DECODED = SIZE[0] * SIZE[1] * 3 * 4  # bytes of one image as float32


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def trial_peak(folder: Path, roots: tuple[str, ...], data_dir: Path) -> tuple[int, int]:
    """Register `folder` and train one epoch on it in a fresh worker child; (the child's peak
    resident memory in KiB, the steps it trained)."""
    source = ImageFolder(kind="image_folder", uri=str(folder), image_size=SIZE)
    facts = register(source, roots)
    params = models.validate("small_cnn", {}, tuple(facts.input_shape), facts.head,
                             max_params=10_000_000)
    spec = RunSpec(model=BuiltinModel(name="small_cnn", params=params),
                   data=DataRef(name=folder.name, source=source, registered=facts),
                   batch_size=32, seed=0)
    config: dict[str, Any] = {
        "spec": spec.stored(), "schedule": "constant", "schedule_params": {"lr": 0.01},
        "epochs": 1, "seed": 0, "data_dir": str(data_dir), "max_params": None,
        "roots": list(roots), "stream": {"shuffle_buffer": 10_000, "cache": "none",
                                         "cache_dir": None}}
    executor = Executor(gpu=None, max_jobs=1)
    try:
        executor.submit((1, 1), {"kind": "trial", "config": config})
        steps = 0
        while True:
            message = executor.receive(timeout=300)
            assert message is not None, "the child did not answer within 300 s"
            kind, payload = message
            if kind == "started":
                steps = payload["steps_per_epoch"]
            elif kind == "epoch":
                executor.reply("go")
            else:
                assert kind == "done", payload
                break
        return peak_kib(executor._proc.pid), steps
    finally:
        executor.stop()


def test_a_large_image_folder_is_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    # The children run TensorFlow as workers do, with oneDNN (the test suite turns it off for
    # quiet logs). Without it, TensorFlow's fallback convolutions grow the heap with every
    # step whatever the data (measured: the 10 MB folder for 40 steps peaks about 170 MB
    # above 2 steps), which would measure the kernels, not the input pipeline.
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    root = tmp_path / "root"
    small = write_image_folder(root / "small", {"a": 26, "b": 26}, size=SIZE)
    large = write_image_folder(root / "large", {"a": 800, "b": 800}, size=SIZE)
    assert 1600 * DECODED > 300_000_000 and 52 * DECODED < 10_500_000
    roots = parse_roots([str(root)])
    small_peak, small_steps = trial_peak(small, roots, tmp_path / "data")
    large_peak, large_steps = trial_peak(large, roots, tmp_path / "data")
    # Steps per epoch come from the registered counts: 80% of the images train.
    assert (small_steps, large_steps) == (2, 40)
    growth_mb = (large_peak - small_peak) * 1024 / 1e6
    print(f"child peak: {small_peak / 1024:.0f} MiB (10 MB folder), "
          f"{large_peak / 1024:.0f} MiB (315 MB folder), growth {growth_mb:.0f} MB")
    assert growth_mb < 150, growth_mb
