"""GPU tier, B1 precision and XLA: training throughput of ResNet-20 on generated 32x32x3 images
(bench/gpu.py) through the library's training loop (`lrsearch.training.train`, what a worker's
child runs), in four arms: fp32 or mixed precision, each with XLA (`jit_compile`) on and off
(PyTorch: off only). Two figures per pair of arms, each a ratio of seconds per epoch:
mixed precision's speed-up (fp32 / mixed) at each XLA setting, and XLA's (off / on) at each
precision.

Each arm is one training; its first epoch (tracing and compiling) is left out, and the pairs
are its later epochs with the other arm's of the same number (the arms run one after another
in this process, Keras' session cleared in between: one compile per arm keeps the tier
within its minutes). Also
written: images per second and the first epoch's seconds (the compile cost) of every arm.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import gpu
from bench.common import Ratio, command_line, write_result


def epoch_seconds(path: Path, model: str, batch_size: int, arm: gpu.Arm, epochs: int
                  ) -> tuple[list[float], dict[str, Any]]:
    """Train one arm for `epochs`; the wall seconds of each epoch (the first one includes
    building, tracing and compiling) and the run's provenance (what it ran on)."""
    import keras

    from lrsearch.training import TrainConfig, train

    marks = [time.perf_counter()]
    keras.backend.clear_session()
    result = train(TrainConfig(gpu.run_spec(path, model, batch_size, arm), schedule="constant",
                               schedule_params={"lr": 0.01}, epochs=epochs, seed=0),
                   on_epoch_end=lambda _record: marks.append(time.perf_counter()))
    seconds = [b - a for a, b in itertools.pairwise(marks)]
    return seconds, dict(getattr(result, "provenance", {}) or {})


def main(smoke: bool = False, epochs: int = 4, eager_epochs: int = 3, train: int = 8192,
         batch_size: int = 128, model: str = "resnet20") -> list[dict[str, Any]]:
    if smoke:
        epochs, eager_epochs, train, batch_size, model = 3, 3, 128, 32, "mlp"
    folder = Path(tempfile.mkdtemp(prefix="lrsearch-gpu-b1-"))
    path = gpu.write_problem(folder, train, max(64, train // 8))
    arms = gpu.arms(gpu.backend())
    runs: dict[gpu.Arm, list[float]] = {}
    provenance: dict[str, Any] = {}
    for arm in arms:
        n = epochs if arm.jit_compile else eager_epochs  # eager steps are slow on JAX
        runs[arm], provenance[arm.label] = epoch_seconds(path, model, batch_size, arm, n)
        print(f"  {arm.label}: first epoch {runs[arm][0]:.1f} s, then "
              f"{statistics.median(runs[arm][1:]):.3f} s median", flush=True)
    figures = []
    pairs = [(gpu.Arm(False, j), gpu.Arm(True, j), "mixed precision speed-up",
              f"XLA {'on' if j else 'off'}") for j in (True, False)]
    pairs += [(gpu.Arm(mp, False), gpu.Arm(mp, True), "XLA speed-up",
               "mixed precision" if mp else "fp32") for mp in (False, True)]
    for slow, fast, what, where in pairs:
        if slow not in runs or fast not in runs:
            continue
        ratio = Ratio(f"GPU B1 {what} ({where}, {model})", f"s/epoch {slow.label}",
                      f"s/epoch {fast.label}")
        ratio.pairs = list(zip(runs[slow][1:], runs[fast][1:], strict=False))
        print(ratio.line())
        figures.append({**ratio.summary(), "config": {
            "model": model, "batch_size": batch_size, "train_images": train,
            "backend": gpu.backend()}})
    arms_out = {arm.label: {"epoch_seconds": s, "first_epoch_s": s[0],
                            "images_per_s": train / statistics.median(s[1:]),
                            "provenance": provenance[arm.label]} for arm, s in runs.items()}
    write_result("gpu_b1_precision", {"figures": figures, "arms": arms_out,
                                      "notes": [f"B1 {k}: {v['images_per_s']:.0f} images/s, "
                                                f"first epoch {v['first_epoch_s']:.1f} s"
                                                for k, v in arms_out.items()]}, smoke)
    return figures


if __name__ == "__main__":
    command_line(main, __doc__, repeats=None, epochs=(int, 4, "epochs of an XLA arm"),
                 eager_epochs=(int, 3, "epochs of an arm without XLA"),
                 train=(int, 8192, "training images"), batch_size=(int, 128, "batch size"),
                 model=(str, "resnet20", "built-in model"))
