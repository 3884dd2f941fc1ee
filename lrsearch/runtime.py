"""What a run trains on and how: the Keras backend, the device, the precision policy and XLA
(imports Keras; the worker's child and local runs use it).

`prepare(spec)` sets the global dtype policy a run asks for before its model is built, and
returns the `Runtime` the run then compiles with and records as its provenance:

- `mixed_precision=True` is Keras' `mixed_float16` (float16 compute, float32 variables; Keras
  wraps the optimizer in a LossScaleOptimizer when it compiles) on a GPU. Without one it falls
  back to `mixed_bfloat16`, which CPUs compute and which needs no loss scaling; the policy that
  ran is what the trial records. `mixed_precision=False` is `float32` on every device.
- `jit_compile` is passed to `Model.compile` as it was asked: True, False, or "auto" (Keras'
  own choice: XLA on JAX, on TensorFlow only on a GPU, never on PyTorch). The provenance
  records what Keras resolved it to (`model.jit_compile` after compiling).

The policy is set for every run, float32 included, so that a child process that ran a mixed
precision trial does not pass the policy on to the next trial it runs.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any, Literal

import keras

from lrsearch.spec import RunSpec

JitCompile = bool | Literal["auto"]


def backend_version(backend: str) -> str:
    """The installed version of Keras' backend library."""
    imported = __import__(backend)  # each backend's library is named as the backend
    return str(getattr(imported, "__version__", "unknown"))


def accelerator() -> tuple[str, str]:
    """("gpu", its model name) for the first GPU the backend sees, else ("cpu", the CPU's
    name as the platform reports it). Asks the backend's own library, not nvidia-smi: a
    GPU hidden by CUDA_VISIBLE_DEVICES is not one this run trains on."""
    backend = keras.backend.backend()
    name: str | None = None
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        name = str(gpus[0].device_kind) if gpus else None
    elif backend == "torch":
        import torch

        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            name = str(details.get("device_name") or gpus[0].name)
    if name is not None:
        return "gpu", name
    return "cpu", cpu_name()


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()[:200]
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def precision_policy(mixed_precision: bool, device: str) -> str:
    """The dtype policy a run trains under (see the module docstring)."""
    if not mixed_precision:
        return "float32"
    return "mixed_float16" if device == "gpu" else "mixed_bfloat16"


@dataclass(frozen=True)
class Runtime:
    """How a run trains: `policy` (the dtype policy set), `jit_compile` (as asked, for
    `Model.compile`), and the facts recorded with it."""

    backend: str
    backend_version: str
    keras_version: str
    device: str  # "cpu" or "gpu"
    device_name: str
    policy: str
    mixed_precision: bool
    jit_compile: JitCompile

    def provenance(self, model: keras.Model | None = None) -> dict[str, Any]:
        """The record a trial or range test keeps of what it ran on. `xla` is what Keras
        resolved `jit_compile` to on the compiled `model` (None before there is one; on
        PyTorch that is torch.compile, which `compiler` says). `precision_policy` is the
        policy the model's layers compute in when they all share one (an uploaded model
        keeps the policies it was saved with, whatever was asked), else the one set."""
        compiled = None if model is None else bool(getattr(model, "jit_compile", False))
        layers = None if model is None else layer_policies(model)
        policy = self.policy
        if layers and len(layers) == 1 and layers[0] != policy:
            policy = layers[0]  # an uploaded model keeps the policy it was saved with
        return {"backend": self.backend, "backend_version": self.backend_version,
                "keras_version": self.keras_version, "device": self.device,
                "device_name": self.device_name, "precision_policy": policy,
                "layer_policies": layers,
                "mixed_precision_requested": self.mixed_precision,
                "jit_compile_requested": self.jit_compile, "xla": compiled,
                # PyTorch's jit_compile is torch.compile, not XLA
                "compiler": None if not compiled else
                ("torch.compile" if self.backend == "torch" else "xla")}


def layer_policies(model: keras.Model) -> list[str]:
    """The dtype policies of the model's layers that hold weights, each once."""
    def walk(layer: Any) -> Any:
        for inner in getattr(layer, "layers", None) or ():
            yield inner
            yield from walk(inner)

    names = {layer.dtype_policy.name for layer in walk(model)
             if layer.weights and getattr(layer, "dtype_policy", None) is not None}
    return sorted(names)


def prepare(spec: RunSpec) -> Runtime:
    """Set the dtype policy `spec` asks for on this device (before the model is built) and
    return the run's Runtime."""
    backend = keras.backend.backend()
    device, name = accelerator()
    policy = precision_policy(spec.mixed_precision, device)
    keras.config.set_dtype_policy(policy)
    return Runtime(backend=backend, backend_version=backend_version(backend),
                   keras_version=keras.__version__, device=device, device_name=name,
                   policy=policy, mixed_precision=spec.mixed_precision,
                   jit_compile=spec.jit_compile)
