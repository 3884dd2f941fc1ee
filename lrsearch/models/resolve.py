"""A RunSpec's model reference made into a compiled Keras model (imports Keras; only the
worker's child and local runs use it).

- A built-in architecture or a plugin's builder is built for the dataset's input shape and
  head, under the seed set by the caller.
- An upload is loaded with `safe_mode=True` (no lambdas, no arbitrary code) from its file, after
  its SHA-256 is checked against the reference. `init="uploaded"` keeps the saved weights;
  `init="fresh"` clones the architecture with newly initialised weights (under the seed).

Compilation replaces only the optimizer. The loss and metrics are the request's when given,
else an upload's own when it was saved compiled, else the dataset head's defaults.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from lrsearch import models, plugins
from lrsearch.digests import sha256_file
from lrsearch.errors import ModelError
from lrsearch.spec import BuiltinModel, RunSpec, UploadedModel


def upload_file(ref: UploadedModel) -> Path:
    """The upload's file, checked against its digest (a changed file is refused by name)."""
    file = ref.file
    if file is None or not Path(file).exists():
        raise ModelError(f"The file of uploaded model `{ref.upload}` is missing; upload it "
                         "again.", field="model.upload")
    if sha256_file(file) != ref.sha256:
        raise ModelError(f"The file of uploaded model `{ref.upload}` changed since it was "
                         "uploaded (its SHA-256 differs); upload it again.",
                         field="model.upload")
    return Path(file)


def _built(ref: BuiltinModel, input_shape: tuple[int, ...], head: models.Head) -> keras.Model:
    if ref.name in models.names():
        return models.build(ref.name, ref.params, input_shape, head)
    builder = plugins.builders.get(ref.name)
    net = builder.build(input_shape, head, **{**{k: d for k, (d, _) in builder.params.items()},
                                              **ref.params})
    if not isinstance(net, keras.Model):
        raise ModelError(f"Plugin builder `{ref.name}` returned {type(net).__name__}, not a "
                         "keras.Model", field="model.name")
    return net


def _loaded(ref: UploadedModel, path: Path) -> keras.Model:
    net = keras.saving.load_model(path, compile=False, safe_mode=True)
    if ref.init == "fresh":
        # clone_model rebuilds every layer from its config: new weights from the layers' own
        # initialisers, drawn under the seed the caller set.
        fresh = keras.models.clone_model(net)
        if not fresh.built:  # functional and sequential clones are built already
            fresh.build(net.inputs[0].shape if len(net.inputs) == 1
                        else [i.shape for i in net.inputs])
        net = fresh
    return net


def saved_compile_config(ref: UploadedModel, path: Path) -> dict[str, Any] | None:
    """The loss and metrics an upload was saved with (deserialized in safe mode), or None.
    Read from the archive's config.json: the optimizer it names is never built."""
    if not ref.compiled:
        return None
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json")).get("compile_config") or {}
    out = {}
    for key in ("loss", "loss_weights", "metrics", "weighted_metrics"):
        value = config.get(key)
        if isinstance(value, dict | list):
            value = keras.saving.deserialize_keras_object(value, safe_mode=True)
        if value is not None:
            out[key] = value
    return out or None


def compile_args(spec: RunSpec, head: models.Head, saved: dict[str, Any] | None
                 ) -> dict[str, Any]:
    """loss/metrics for compile(): the request's, else the saved ones, else the head's."""
    args: dict[str, Any] = dict(saved or {})
    if spec.loss is not None or "loss" not in args:
        args["loss"] = spec.loss or head.loss
    if spec.metrics is not None or "metrics" not in args:
        args["metrics"] = list(spec.metrics if spec.metrics is not None else head.metrics)
    return args


def compiled_model(spec: RunSpec, input_shape: Sequence[int], head: models.Head,
                   optimizer: Any, *, max_params: int | None = None,
                   jit_compile: bool | str = "auto") -> keras.Model:
    """The spec's model, compiled with `optimizer` (see the module docstring) and
    `jit_compile` (Keras' argument: True, False or "auto"). The caller sets the random seed
    and the dtype policy first: they decide a built or `fresh` model's initial weights and
    its layers' dtypes."""
    ref = spec.model
    if isinstance(ref, UploadedModel):
        path = upload_file(ref)  # its digest checked once, before anything is loaded
        net, saved = _loaded(ref, path), saved_compile_config(ref, path)
    else:
        net, saved = _built(ref, tuple(input_shape), head), None
    if max_params is not None and net.count_params() > max_params:
        raise ModelError(f"Model `{_label(ref)}` must have at most {max_params:,} parameters "
                         f"(the server's max_model_params). Received: {net.count_params():,}",
                         field="model")
    net.compile(optimizer=optimizer, jit_compile=jit_compile,
                **compile_args(spec, head, saved))
    return net


def _label(ref: BuiltinModel | UploadedModel) -> str:
    return ref.name if isinstance(ref, BuiltinModel) else ref.upload
