"""The spawned child process: the only place a worker initialises Keras and its backend
(TensorFlow, JAX or PyTorch, `lrsearch worker --backend`).

It receives tasks over a pipe, trains, and answers with messages; the parent owns the
database, the lease and Optuna. Every message carries the task's tag, (job id, attempt).
Protocol (child -> parent), each as (tag, kind, payload):
  ("started", {"steps_per_epoch": n,       once the data is loaded and the model compiled
              "provenance": {...}})        (what it runs on: lrsearch.training.train); a
                                           resumed trial's epoch messages start after its
                                           checkpoint
  ("epoch", record)                        then waits for (tag, "go" | "prune" | "cancel" |
                                           "pause": go on to save this epoch's checkpoint,
                                           then stop)
  ("done", payload) | ("pruned", {...}) | ("cancelled", {...}) | ("paused", {"epoch": e})
  ("failed", {"kind": diverged|objective|oom|invalid|checkpoint|error, "message": ...,
              "traceback": ...})
A "register_dataset" task reads a dataset reference and answers ("done", what registration
found). A "describe" task imports the operator's plugins and answers ("done",
lrsearch.plugins.catalog).
A reply with another tag is dropped. Anything else while waiting for a reply (a new task, the
pipe closing) means the parent gave this task up: the child exits rather than train on for a
job nobody holds. A crash (segfault, OOM kill) shows in the parent as a dead process without an
answer.
"""

from __future__ import annotations

import os
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any


class _Abandoned(Exception):
    """The parent moved on from this task (it sent something other than a reply)."""


class _Stop(Exception):
    def __init__(self, kind: str, epoch: int) -> None:
        self.kind, self.epoch = kind, epoch


# Of a GPU shared by N workers, each JAX worker may take this much over N: the rest is left to
# the N CUDA contexts, which the allocator's limit does not count.
JAX_SHARE_OF_GPU = 0.95
# What _prepare_backend may set, as `describe` reports it (the worker's published settings).
DEVICE_VARIABLES = ("KERAS_BACKEND", "CUDA_VISIBLE_DEVICES", "TF_FORCE_GPU_ALLOW_GROWTH",
                    "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                    "PYTORCH_CUDA_ALLOC_CONF")


def _prepare_backend(gpu: int | None, backend: str, per_gpu: int = 1) -> None:
    """Before Keras is imported: choose its backend (KERAS_BACKEND is read once, at Keras'
    import), pin the GPU, and take this worker's share of it when `per_gpu` workers share one.

    TensorFlow allocates as it grows (TF_FORCE_GPU_ALLOW_GROWTH), so workers sharing a GPU
    split it by use. JAX would preallocate 75% of the GPU: it allocates on demand instead,
    and with N workers on the GPU each is capped at JAX_SHARE_OF_GPU / N of it. PyTorch
    allocates on demand already (expandable segments keep its cache from fragmenting); its
    per-process cap of 1/N is set once torch is imported (`_limit_torch`)."""
    os.environ["KERAS_BACKEND"] = backend
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if backend == "tensorflow":
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    elif backend == "jax":
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if per_gpu > 1:
            os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{JAX_SHARE_OF_GPU / per_gpu:.3f}"
    elif backend == "torch":
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def _limit_torch(per_gpu: int) -> float | None:
    """PyTorch's cap on this process's share of its GPU, 1/per_gpu (None without a GPU or when
    the GPU is not shared). Its CUDA context is not counted, as JAX's is not."""
    if per_gpu <= 1:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    fraction = 1.0 / per_gpu
    torch.cuda.set_per_process_memory_fraction(fraction)
    return fraction


def device_settings() -> dict[str, str]:
    """The variables that decide this process's backend and GPU share, as set."""
    return {k: os.environ[k] for k in DEVICE_VARIABLES if k in os.environ}


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation failure, whatever the backend: TensorFlow's ResourceExhaustedError,
    PyTorch's OutOfMemoryError, JAX's XlaRuntimeError saying RESOURCE_EXHAUSTED, Python's
    MemoryError."""
    name = type(exc).__name__
    return (name in ("ResourceExhaustedError", "OutOfMemoryError")
            or isinstance(exc, MemoryError)
            or (name == "XlaRuntimeError" and "RESOURCE_EXHAUSTED" in str(exc)))


def _await_reply(conn: Connection, tag: Any) -> str:
    """The parent's reply to this task's last message; replies for other tags are dropped."""
    while True:
        message = conn.recv()
        if isinstance(message, tuple) and len(message) == 2 and isinstance(message[1], str):
            if tuple(message[0]) == tuple(tag):
                return message[1]
            continue  # a late reply meant for an earlier task
        raise _Abandoned()


def _train(conn: Connection, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from lrsearch.errors import TrainingPaused
    from lrsearch.training import CheckpointPlan, EpochRecord, TrainConfig, train

    if task.get("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)  # fault injection for the recovery tests
    tag = task["tag"]
    pause = [False]  # set by a "pause" reply; the run stops once the epoch's checkpoint is saved

    def on_epoch(record: EpochRecord) -> None:
        conn.send((tag, "epoch", record.as_dict()))
        reply = _await_reply(conn, tag)
        if reply in ("prune", "cancel"):
            raise _Stop(reply, record.epoch)
        pause[0] = reply == "pause"

    from lrsearch.datasets.options import StreamOptions
    from lrsearch.spec import RunSpec

    c = task["config"]
    plan = c.get("checkpoint")
    config = TrainConfig(RunSpec.model_validate(c["spec"]), schedule=c["schedule"],
                         schedule_params=c["schedule_params"], epochs=c["epochs"],
                         seed=c["seed"], data_dir=c.get("data_dir"),
                         max_params=c.get("max_params"), roots=tuple(c.get("roots") or ()),
                         stream=StreamOptions(**c.get("stream", {})),
                         checkpoint=None if plan is None else CheckpointPlan(**plan))
    try:
        result = train(config, on_epoch_end=on_epoch,
                       on_start=lambda spe, provenance: conn.send(
                           (tag, "started", {"steps_per_epoch": spe,
                                             "provenance": provenance})),
                       pause_after_epoch=lambda: pause[0])
    except TrainingPaused as paused:
        return "paused", {"epoch": paused.epoch}
    except _Stop as stop:
        return ("pruned" if stop.kind == "prune" else "cancelled"), {"epoch": stop.epoch}
    return "done", {"epochs": [r.as_dict() for r in result.epochs],
                    "steps_per_epoch": result.steps_per_epoch,
                    "resumed_from": result.resumed_from}


def _range_test(task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from lrsearch.datasets.options import StreamOptions
    from lrsearch.range_test import SweepSettings
    from lrsearch.range_test.runner import RangeTestConfig, run
    from lrsearch.spec import RunSpec

    spec = task["spec"]
    if "run" not in spec:  # a range test stored before RunSpec: its request holds it all
        spec = {"run": RunSpec.from_stored(spec).stored(), "repeats": spec["repeats"],
                "validation": spec["validation"],
                "sweep": {k: spec[k] for k in ("min_lr", "max_lr", "num_iter", "mode",
                                               "diverge_threshold")}}
    config = RangeTestConfig(RunSpec.model_validate(spec["run"]),
                             settings=SweepSettings(**spec["sweep"]),
                             repeats=spec["repeats"], validation=spec["validation"],
                             data_dir=task.get("data_dir"), max_params=task.get("max_params"),
                             roots=tuple(task.get("roots") or ()),
                             stream=StreamOptions(**task.get("stream", {})))
    return "done", run(config)


def _register_dataset(task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Read a dataset reference's files (or download a Keras dataset); answer what was found
    (lrsearch.datasets.references.Registered)."""
    from lrsearch.datasets import register_source

    return "done", register_source(task["source"], roots=task["roots"],
                                   data_dir=task["data_dir"],
                                   downloads=task["downloads"]).model_dump(mode="json")


def _describe(task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Import the operator's plugins; answer what this process can load (its Keras backend
    included) and, under "device", the backend and GPU settings it runs with."""
    from lrsearch import plugins

    catalog = plugins.catalog(plugins.load(task["plugins"]))
    device: dict[str, Any] = {"variables": device_settings()}
    if _TORCH_FRACTION[0] is not None:
        device["torch_memory_fraction"] = _TORCH_FRACTION[0]
    return "done", {**catalog, "device": device}


TASKS = {"range_test": _range_test, "register_dataset": _register_dataset,
         "describe": _describe}


def _load_plugins(names: list[str]) -> None:
    """Every task names the worker's plugins: a fresh child imports them before its first
    model (importing is done once per process)."""
    if names:
        from lrsearch import plugins

        plugins.load(names)


# The data roots and data directory of the task at hand: failure messages keep paths under the
# roots (the tenant's own URIs) and label the data directory, as the API's messages do.
_PATHS: dict[str, Any] = {"roots": [], "data_dir": None}


def _failure(exc: BaseException) -> tuple[str, dict[str, Any]]:
    from lrsearch.datasets import path_labels
    from lrsearch.datasets.references import DatasetChanged
    from lrsearch.errors import (
        CheckpointUnusable,
        LRSearchError,
        ObjectiveNotLogged,
        TrainingDiverged,
        redact_paths,
    )

    kind = "error"
    if isinstance(exc, CheckpointUnusable):
        kind = "checkpoint"
    elif isinstance(exc, TrainingDiverged):
        kind = "diverged"
    elif isinstance(exc, ObjectiveNotLogged):
        kind = "objective"
    elif isinstance(exc, DatasetChanged):
        kind = "dataset_changed"
    elif _out_of_memory(exc):
        kind = "oom"
    elif isinstance(exc, LRSearchError):
        kind = "invalid"
    # The reason is shown to the study's tenant: no server paths (file names stay, so the
    # traceback still says where it failed).
    labels = path_labels(_PATHS["data_dir"], _PATHS["roots"])
    summary = redact_paths("".join(traceback.format_exception(exc, limit=-6)), labels)[-4000:]
    return "failed", {"kind": kind,
                      "message": redact_paths(f"{type(exc).__name__}: {exc}", labels),
                      "traceback": summary}


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this child the moment its worker dies (SIGKILL, OOM kill), so
    it never trains on for a job whose lease nobody renews; elsewhere the closed pipe stops
    it at the next epoch."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the worker died before the line above took effect
        os._exit(1)


_TORCH_FRACTION: list[float | None] = [None]  # the cap _limit_torch set, for `describe`


def main(conn: Connection, gpu: int | None, parent: int | None = None,
         backend: str = "tensorflow", per_gpu: int = 1) -> None:
    """Serve tasks until the parent sends None or closes the pipe. `backend` is Keras' (set
    here, before anything imports Keras); `per_gpu` is how many workers share this GPU."""
    if parent is not None:
        _die_with_parent(parent)
    # The parent decides when a child stops: a signal sent to the whole process group (Ctrl-C
    # in a terminal, systemd's stop) must let the worker hand its trial on at an epoch's end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _prepare_backend(gpu, backend, per_gpu)
    if backend == "torch":
        _TORCH_FRACTION[0] = _limit_torch(per_gpu)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        config = task.get("config") or task
        _PATHS.update(roots=list(config.get("roots") or []), data_dir=config.get("data_dir"))
        try:
            _load_plugins(task.get("plugins", []))
            kind, payload = (_train(conn, task) if task["kind"] == "trial"
                             else TASKS[task["kind"]](task))
        except (EOFError, BrokenPipeError, _Abandoned):
            return  # the worker is gone or gave this task up: nobody to report to
        except Exception as exc:  # every failure goes back with its reason
            kind, payload = _failure(exc)
        try:
            conn.send((task["tag"], kind, payload))
        except (EOFError, BrokenPipeError, OSError):
            return
        import keras

        keras.backend.clear_session(free_memory=True)
