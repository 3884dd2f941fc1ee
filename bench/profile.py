"""Profiles behind the analysis in BENCHMARKS.md: where the time goes when a target is missed.

    python -m bench.profile b1     # py-spy of a worker and its child during B1's trial
    python -m bench.profile b3     # cProfile of one range test and of the same plain steps
    python -m bench.profile b4     # py-spy (every thread) of the API process under B4's load

Each writes bench/results/profile_<name>.txt: the functions with the most time, by self time
and by inclusive time (py-spy samples), or pstats' cumulative listing (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from bench.common import RESULTS, service

PY_SPY = str(Path(sys.executable).with_name("py-spy"))


def _pstats(profile: cProfile.Profile, title: str, limit: int = 30) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(limit)
    return f"## {title}\n{out.getvalue()}"


def b3(num_iter: int = 300) -> str:
    from bench.b3_range_test import plain_steps_seconds, range_test_seconds
    from lrsearch import datasets

    data = datasets.load("digits", seed=0)
    range_test_seconds("mlp", data, 10)
    plain_steps_seconds("mlp", data, 10)
    parts = []
    for title, run in (("range test (lr_find)", range_test_seconds),
                       ("plain training steps (model.fit)", plain_steps_seconds)):
        profile = cProfile.Profile()
        profile.enable()
        seconds = run("mlp", data, num_iter)
        profile.disable()
        parts.append(_pstats(profile, f"{title}: {num_iter} steps, {seconds:.2f} s"))
    return "\n".join(parts)


def b3_decomposition(num_iter: int = 1000, repeats: int = 7) -> str:
    """What each part of the sweep's per-step work adds to a plain `fit` step: callbacks that
    do one part each, timed like B3 (same model, same data, trace untimed), medians."""
    import statistics
    import time

    import keras

    from bench.b3_range_test import _model
    from lrsearch import datasets
    from lrsearch.training import pipeline

    data = datasets.load("digits", seed=0)

    class Part(keras.callbacks.Callback):
        def __init__(self, parts: set[str]) -> None:
            super().__init__()
            self.parts = parts

        def on_train_begin(self, logs: object = None) -> None:
            import tensorflow as tf

            self.tracker = next(m for m in self.model.metrics if m.name == "loss")
            self.lr_value = tf.constant(1e-3, tf.float32)
            self.zeros = [(v.value, tf.zeros_like(v.value)) for v in self.tracker.variables]

        def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
            if "lr" in self.parts:  # Keras' Variable.assign (what the sweep did first)
                self.model.optimizer.learning_rate.assign(1e-3)
            if "reset" in self.parts:
                self.tracker.reset_state()
            if "direct" in self.parts:  # the backend variables, tensors made up front (now)
                lr = self.model.optimizer.learning_rate
                getattr(lr, "value", lr).assign(self.lr_value, read_value=False)
                for variable, zero in self.zeros:
                    variable.assign(zero, read_value=False)

        def on_train_batch_end(self, batch: int, logs: dict[str, object] | None = None) -> None:
            if "read" in self.parts and logs is not None:
                float(logs["loss"])  # type: ignore[arg-type]

    def timed(parts: set[str] | None) -> float:
        model = _model("mlp", data)
        ds = pipeline(data.x_train, data.y_train, 32, 0).repeat()
        callbacks = [] if parts is None else [Part(parts)]
        model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0, callbacks=callbacks)
        start = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=num_iter, verbose=0, callbacks=callbacks)
        return (time.perf_counter() - start) / num_iter * 1000

    variants: dict[str, set[str] | None] = {
        "plain fit": None, "+ batch callbacks doing nothing": set(),
        "+ read the loss (sync)": {"read"}, "+ write the LR": {"read", "lr"},
        "+ reset the loss mean (the first fit-based sweep)": {"read", "lr", "reset"},
        "read + LR write + reset on the TF variables (the sweep now)": {"read", "direct"}}
    lines = [f"## B3 per-step cost, mlp, {num_iter} steps, median of {repeats} interleaved "
             "repeats (ms per step)"]
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved, so a slow moment of the machine hits every variant
        for name, parts in variants.items():
            samples[name].append(timed(parts))
    for name, values in samples.items():
        lines.append(f"{statistics.median(values):7.3f} ms  {name}  (range "
                     f"{min(values):.3f}-{max(values):.3f})")
    return "\n".join(lines)


def summarize_raw(path: Path, limit: int = 25) -> str:
    """py-spy's raw (collapsed) stacks -> the functions with the most samples, self and
    inclusive."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        self_time[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples"]
    for title, counter in (("self", self_time), ("inclusive", inclusive)):
        lines.append(f"\n### top {limit} by {title} samples")
        for frame, n in counter.most_common(limit):
            lines.append(f"{100 * n / total:6.1f}%  {frame}")
    return "\n".join(lines)


def b4(seconds: int = 10) -> str:
    from bench.b4_api_latency import CLIENTS, measure

    with service() as svc:
        study_id = svc.submit({"family": "constant", "dataset": "digits", "epochs": 1,
                               "n_trials": 1})
        path = f"/v1/studies/{study_id}"
        measure(svc.url, path, CLIENTS, 3)
        raw = svc.folder / "api.pyspy.txt"
        spy = subprocess.Popen([PY_SPY, "record", "--pid", str(svc.api.pid), "--duration",
                                str(seconds), "--format", "raw", "--output", str(raw),
                                "--rate", "200", "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stop = threading.Event()
        served = [0]

        def load() -> None:
            while not stop.is_set():
                served[0] += len(measure(svc.url, path, CLIENTS, 10))

        thread = threading.Thread(target=load)
        thread.start()
        spy.wait(timeout=seconds + 60)
        stop.set()
        thread.join()
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {spy.stderr.read().decode() if spy.stderr else ''}")
        return (f"## API process under {CLIENTS} concurrent clients (workers idle), "
                f"{served[0]} requests\n{summarize_raw(raw)}")


def b1(epochs: int = 100, seconds: int = 12) -> str:
    """Where a worker's time goes while its child trains B1's trial: py-spy on the worker
    (every thread) and, with --subprocesses, on its training child."""
    from bench.b1_overhead import study

    with service() as svc:
        worker = svc.start_worker()
        svc.wait(svc.submit(study(1, 16, 0)))  # warm the child (B1's first configuration)
        raw = svc.folder / "worker.pyspy.txt"
        svc.submit(study(epochs, 16, 0))
        time.sleep(1.5)  # the trial is under way
        spy = subprocess.run([PY_SPY, "record", "--pid", str(worker.pid), "--subprocesses",
                              "--duration", str(seconds), "--format", "raw", "--output",
                              str(raw), "--rate", "200", "--nonblocking", "--idle"],
                             capture_output=True, text=True, timeout=seconds + 60)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {spy.stderr}")
        return (f"## worker and child during a {epochs}-epoch B1 trial ({seconds} s sampled)\n"
                f"{summarize_raw(raw, limit=40)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=["b1", "b3", "b4"])
    args = parser.parse_args()
    if args.name == "b1":
        text = b1()
    elif args.name == "b3":
        text = f"{b3()}\n\n{b3_decomposition()}"
    else:
        text = b4()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"profile_{args.name}.txt"
    out.write_text(text)
    print(text[:6000])
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
