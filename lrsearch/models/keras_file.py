"""Reading an uploaded `.keras` archive without running anything in it (pure Python: the API
validates uploads with it and never imports TensorFlow or a user's code).

A `.keras` file (what `model.save("net.keras")` writes) is a zip of `metadata.json`,
`config.json`, `model.weights.h5` and, for some layers, files under `assets/`. Before anything
is decompressed, the zip's end record and directory are bounded (as for an .npz upload) and
every member is checked: known names only, no path tricks, stored or deflate, not encrypted,
declared sizes within the budget. The two JSON members are then read (each at most
MAX_JSON_BYTES, real bytes counted) and every serialized object in them is checked:

- a `Lambda` layer or a serialized Python lambda is refused (it is code);
- a class or function is accepted when it is a Keras built-in (module `keras...`, not
  registered under another name) or registered under a name that a worker's plugins publish
  (`known_custom`); anything else is refused, by name.

What the file declares is returned: input and output shapes, whether it was compiled, its loss
and metric names, the custom objects it needs. The worker later loads it with
`keras.saving.load_model(..., safe_mode=True)`, the second line of defence.
"""

from __future__ import annotations

import json
import posixpath
import re
import zipfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrsearch.datasets.npz import check_directory
from lrsearch.errors import ModelError
from lrsearch.keras_names import LOSSES, METRICS
from lrsearch.models.mlp import ACTIVATIONS

REQUIRED = ("config.json", "metadata.json", "model.weights.h5")
MAX_MEMBERS = 64
MAX_JSON_BYTES = 4 << 20  # config.json (a ResNet-50's is about 0.2 MiB)
MAX_METADATA_BYTES = 64 << 10
MAX_DEPTH = 100  # nesting of the config (a model in a model in a layer ...)
MAX_NODES = 2_000_000  # values of any kind in the config
# Keras' own serialized forms that are data, not classes. (Not `__typespec__`: Keras resolves
# its class from its module.)
DATA_FORMS = ("__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__",
              "__slice__", "__complex__")
# Keras layers refused whatever safe mode a worker's Keras has: they unpickle or load other
# programs.
REFUSED_CLASSES = {"TorchModuleWrapper": "it unpickles a PyTorch module",
                   "TFSMLayer": "it loads a TensorFlow SavedModel from a path",
                   "JaxLayer": "it wraps arbitrary JAX functions",
                   "FlaxLayer": "it wraps an arbitrary Flax module"}
VOCABULARY_LAYERS = ("StringLookup", "IntegerLookup", "TextVectorization")
PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
REGISTERED = re.compile(r"^[A-Za-z0-9_.]{1,128}>[A-Za-z0-9_.]{1,128}$")


# Keras' own functions a config may name plainly (losses, metrics, activations); any other
# plain function name is custom code and must be registered by a plugin.
KERAS_FUNCTIONS = frozenset((*LOSSES, *METRICS, *ACTIVATIONS))


class ModelTooLarge(ModelError):
    """The archive would take more bytes once decompressed than the caller allows."""


@dataclass(frozen=True)
class KerasFileSummary:
    """What a valid `.keras` archive declares (nothing in it was run)."""

    keras_version: str | None
    model_class: str
    input_shapes: list[list[int | None]]
    output_shapes: list[list[int | None]] | None  # None where the config does not say
    compiled: bool
    loss: list[str]
    metrics: list[str]
    custom_objects: list[str]
    layers: int
    decompressed_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"keras_version": self.keras_version, "model_class": self.model_class,
                "input_shapes": self.input_shapes, "output_shapes": self.output_shapes,
                "compiled": self.compiled, "loss": self.loss, "metrics": self.metrics,
                "custom_objects": self.custom_objects, "layers": self.layers,
                "decompressed_bytes": self.decompressed_bytes}


def _invalid(reason: str) -> ModelError:
    return ModelError(f"Not a Keras model archive (.keras, as model.save writes it): {reason}",
                      field="file")


def _check_member(info: zipfile.ZipInfo) -> None:
    name = info.filename
    normal = posixpath.normpath(name)
    if (name.startswith(("/", "\\")) or "\\" in name or normal != name.rstrip("/")
            or normal.startswith("..") or ":" in name or "\x00" in name):
        raise _invalid(f"member name `{name[:200]}` is not a plain relative path")
    if name not in REQUIRED and not name.startswith("assets/"):
        raise _invalid(f"unknown member `{name[:200]}`; a .keras archive holds "
                       f"{', '.join(REQUIRED)} and assets/")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _invalid(f"`{name}` uses zip compression method {info.compress_type}; only "
                       "stored (0) and deflate (8) are accepted")
    if info.flag_bits & 0x1:
        raise _invalid(f"`{name}` is encrypted")


def _entries(zf: zipfile.ZipFile, max_bytes: int) -> tuple[dict[str, zipfile.ZipInfo], int]:
    found: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        _check_member(info)
        if info.filename in found:
            raise _invalid(f"`{info.filename}` appears more than once")
        found[info.filename] = info
    missing = [m for m in REQUIRED if m not in found]
    if missing:
        raise _invalid(f"it has no {', '.join(f'`{m}`' for m in missing)}")
    total = sum(i.file_size for i in found.values())
    if total > max_bytes:
        raise ModelTooLarge(f"The archive declares {total} bytes once decompressed, more than "
                            f"max_decompressed_bytes={max_bytes}", field="file")
    return found, total


def _json(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> Any:
    """A JSON member, reading at most `limit` real bytes whatever the entry declares."""
    if info.file_size > limit:
        raise _invalid(f"`{info.filename}` declares {info.file_size} bytes; at most "
                       f"{limit} are read")
    try:
        with zf.open(info) as f:
            raw = f.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise _invalid(f"`{info.filename}` is corrupt: {e}") from None
    if len(raw) > limit:
        raise _invalid(f"`{info.filename}` holds more than {limit} bytes")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise _invalid(f"`{info.filename}` is not valid JSON: {str(e)[:200]}") from None


def _nodes(node: Any, budget: list[int], depth: int = 0) -> Iterator[Any]:
    """Every value in a config (dicts, lists, strings, ...), outermost first; at most
    MAX_NODES of them and MAX_DEPTH levels deep."""
    if depth > MAX_DEPTH:
        raise _invalid(f"the config nests deeper than {MAX_DEPTH} levels")
    budget[0] -= 1
    if budget[0] < 0:
        raise _invalid(f"the config holds more than {MAX_NODES} values")
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node,
                                                                                list) else ()
    for child in children:
        yield from _nodes(child, budget, depth + 1)


def _refuse_code(obj: dict[str, Any]) -> None:
    """Layers that are code, or that read files or other programs, whatever their module."""
    name, config = obj["class_name"], obj.get("config")
    where = config.get("name") if isinstance(config, dict) else None
    label = f"`{name}` layer" + (f" `{str(where)[:100]}`" if where else "")
    if name in ("Lambda", "__lambda__"):
        label = "`Lambda` layer" if name == "Lambda" else "serialized Python lambda (`Lambda`)"
        label += f" `{str(where)[:100]}`" if where and name == "Lambda" else ""
        raise ModelError(f"The model contains a {label}: it is Python code, which the service "
                         "never runs. Replace it with a registered custom layer (see README, "
                         "Bring your own model).", field="file")
    if name in REFUSED_CLASSES:
        raise ModelError(f"The model contains a {label}: {REFUSED_CLASSES[name]}, which the "
                         "service never loads.", field="file")
    if name in VOCABULARY_LAYERS and isinstance(config, dict) \
            and isinstance(config.get("vocabulary"), str):
        raise ModelError(f"The model contains a {label} whose vocabulary is a file path; save "
                         "the vocabulary in the model instead.", field="file")


def _keras_own(obj: dict[str, Any]) -> bool:
    """A Keras class (module `keras...`, a plain class name, registered under no other name)
    or a Keras function named by one of Keras' own function names."""
    module, name = obj.get("module"), obj["class_name"]
    if name == "function":
        from_keras = module in ("builtins", "keras") or (isinstance(module, str)
                                                         and module.startswith("keras."))
        config = obj.get("config")
        return from_keras and isinstance(config, str) and config in KERAS_FUNCTIONS
    if not isinstance(module, str) or not (module == "keras" or module.startswith("keras.")):
        return False
    return bool(PLAIN_NAME.match(name)) and obj.get("registered_name") in (None, name)


def _custom_name(obj: dict[str, Any]) -> str | None:
    """The name a custom object is registered under (`package>Name`), if it says one."""
    key = obj.get("config") if obj["class_name"] == "function" else obj.get("registered_name")
    return key if isinstance(key, str) and REGISTERED.match(key) else None


def _unknown(shown: str, known_custom: Collection[str]) -> ModelError:
    return ModelError(
        f"The model uses `{shown[:200]}`, which is neither a Keras built-in nor a class the "
        "workers' plugins register"
        + (f" (they register: {', '.join(sorted(known_custom))})" if known_custom
           else " (no live worker publishes any plugin class)")
        + ". Ask the operator to install it as a plugin (LRSEARCH_PLUGINS).", field="file")


def check_objects(config: Any, known_custom: Collection[str]) -> list[str]:
    """An allow-list over every value of a config: each serialized object (a dict with
    `class_name`) is Keras' own data form, a Keras class or function, or registered under a
    name in `known_custom`; each string that looks like a registered name (`package>Name`) is
    in `known_custom`; Lambda layers and layers that load code or files are refused. Returns
    the custom names the config uses (sorted)."""
    custom: set[str] = set()
    for node in _nodes(config, [MAX_NODES]):
        if isinstance(node, str):
            if REGISTERED.match(node):  # a registered object named by a plain string
                if node not in known_custom:
                    raise _unknown(node, known_custom)
                custom.add(node)
            continue
        if not isinstance(node, dict) or "class_name" not in node:
            continue
        name = node["class_name"]
        if not isinstance(name, str):
            raise _invalid(f"a `class_name` is not a string: {str(name)[:100]}")
        _refuse_code(node)
        if name in DATA_FORMS or _keras_own(node):
            continue
        registered = _custom_name(node)
        if registered is None or registered not in known_custom:
            what = node.get("config") if name == "function" else name
            raise _unknown(registered or f"{node.get('module')}.{what}", known_custom)
        custom.add(registered)
    return sorted(custom)


def _shape(value: Any) -> list[int | None] | None:
    if isinstance(value, list) and all(v is None or (isinstance(v, int)
                                                      and not isinstance(v, bool))
                                       for v in value):
        return list(value)
    return None


def _layers(model: dict[str, Any]) -> list[dict[str, Any]]:
    layers = (model.get("config") or {}).get("layers") if isinstance(model.get("config"),
                                                                     dict) else None
    return [layer for layer in layers or [] if isinstance(layer, dict)]


def _input_shapes(model: dict[str, Any]) -> list[list[int | None]]:
    shapes = []
    for layer in _layers(model):
        if layer.get("class_name") == "InputLayer":
            config = layer.get("config") or {}
            shape = _shape(config.get("batch_shape") or config.get("batch_input_shape"))
            if shape is not None:
                shapes.append(shape)
    build = model.get("build_config") or {}
    if not shapes and isinstance(build, dict) and _shape(build.get("input_shape")):
        shapes.append(_shape(build["input_shape"]) or [])
    return shapes


def _output_shapes(model: dict[str, Any]) -> list[list[int | None]] | None:
    """(None, units) of each output layer with `units` (Dense and the like); None when an
    output's shape is not written in the config (it is known once a worker loads it)."""
    layers = _layers(model)
    by_name = {(layer.get("config") or {}).get("name"): layer for layer in layers}
    config: dict[str, Any] = model["config"] if isinstance(model.get("config"), dict) else {}
    outputs = config.get("output_layers")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], str):
        outputs = [outputs]  # one output: [name, node, tensor]
    chosen = ([by_name.get(o[0]) for o in outputs if isinstance(o, list) and o]
              if isinstance(outputs, list) else layers[-1:])
    shapes = []
    for layer in chosen:
        units = ((layer or {}).get("config") or {}).get("units")
        if not isinstance(units, int) or isinstance(units, bool):
            return None
        shapes.append([None, units])
    return shapes or None


def _names(value: Any) -> list[str]:
    """Loss or metric names of a compile config entry (strings, objects, lists, dicts)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [n for v in value for n in _names(v)]
    if isinstance(value, dict):
        if "class_name" in value:
            config = value.get("config")
            name = config.get("name") if isinstance(config, dict) else config
            return [str(name if isinstance(name, str) else value["class_name"])]
        return [n for v in value.values() for n in _names(v)]
    return []


def check_keras_file(path: Path, *, max_decompressed_bytes: int,
                     known_custom: Collection[str] = ()) -> KerasFileSummary:
    """Validate an uploaded `.keras` file (see the module docstring) and summarise it."""
    check_directory(path, MAX_MEMBERS, invalid=_invalid)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise _invalid(str(e)) from None
    with zf:
        entries, total = _entries(zf, max_decompressed_bytes)
        metadata = _json(zf, entries["metadata.json"], MAX_METADATA_BYTES)
        config = _json(zf, entries["config.json"], MAX_JSON_BYTES)
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise _invalid("`config.json` does not describe a serialized model")
    compile_config = config.get("compile_config")
    model_part = {k: v for k, v in config.items() if k != "compile_config"}
    custom = check_objects(model_part, known_custom)
    if isinstance(compile_config, dict):  # the optimizer is replaced, never deserialized
        custom += check_objects({k: v for k, v in compile_config.items() if k != "optimizer"},
                                known_custom)
    if compile_config is not None and not isinstance(compile_config, dict):
        raise _invalid("`config.json`'s compile_config is not an object")
    try:
        return _summary(config, metadata, compile_config, custom, total)
    except (TypeError, AttributeError, KeyError, ValueError) as e:  # a config of odd shapes
        raise _invalid(f"`config.json` is malformed ({type(e).__name__})") from None


def _summary(config: dict[str, Any], metadata: Any, compile_config: dict[str, Any] | None,
             custom: list[str], total: int) -> KerasFileSummary:
    compiled = isinstance(compile_config, dict) and compile_config.get("loss") is not None
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    return KerasFileSummary(
        keras_version=version if isinstance(version, str) else None,
        model_class=str(config.get("registered_name") or config["class_name"])[:200],
        input_shapes=_input_shapes(config), output_shapes=_output_shapes(config),
        compiled=compiled,
        loss=_names(compile_config.get("loss")) if compiled and compile_config else [],
        metrics=_names([compile_config.get("metrics"), compile_config.get("weighted_metrics")])
        if compiled and compile_config else [],
        custom_objects=sorted(set(custom)), layers=len(_layers(config)),
        decompressed_bytes=total)
