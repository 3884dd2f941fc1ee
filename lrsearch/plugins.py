"""Operator plugins: Python packages a worker imports before it loads any model.

The operator installs them on the workers and names them in LRSEARCH_PLUGINS (comma-separated
module names) or in the `lrsearch.plugins` entry-point group. A plugin module, when imported,
may:

- register Keras serializables (custom layers, losses, metrics) the usual way,
  `@keras.saving.register_keras_serializable(package="mypkg")`; uploaded models may then use
  them (the API checks an upload's classes against what live workers publish);
- register model builders with `@lrsearch.plugins.builder("name", params={...})`: a function
  `build(input_shape, head, **params) -> keras.Model` a study can name like a built-in model.

Only workers' children import plugins (they import TensorFlow); each worker publishes what its
plugins registered (`catalog()`) in the database, where the API reads it. Users never upload
code.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lrsearch.errors import ModelError
from lrsearch.registry import Registry

log = logging.getLogger("lrsearch.plugins")
ENTRY_POINT_GROUP = "lrsearch.plugins"


@dataclass(frozen=True)
class Builder:
    """A plugin's model builder: `build(input_shape, head, **params)`, with each parameter's
    default and description (what `GET /v1/models` shows and the API checks names against)."""

    name: str
    description: str
    params: Mapping[str, tuple[Any, str]]
    build: Callable[..., Any]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "source": "plugin",
                "parameters": [{"name": k, "default": d, "description": text}
                               for k, (d, text) in self.params.items()]}


builders: Registry[Builder] = Registry("model builder", error=ModelError, field="model.name")


def builder(name: str, *, description: str = "", params: Mapping[str, tuple[Any, str]] | None
            = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register `fn(input_shape, head, **params) -> keras.Model` as model `name`;
    `params` maps each parameter to (default, description)."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        builders.add(name, Builder(name, description or (fn.__doc__ or "").strip()[:500],
                                   dict(params or {}), fn))
        return fn
    return register


def modules(setting: Sequence[str]) -> list[str]:
    """The plugin modules to import: the setting's, then the entry-point group's."""
    names = [m.strip() for m in setting if m.strip()]
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        module = entry.value.split(":")[0].strip()  # "pkg.mod" or "pkg.mod:attr"
        if module not in names:
            names.append(module)
    return names


def load(names: Sequence[str]) -> list[str]:
    """Import each plugin module once; a plugin that fails to import raises, naming it (a
    worker that cannot load its plugins must not claim work that needs them)."""
    loaded = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:
            raise ModelError(f"Plugin `{name}` could not be imported: {type(e).__name__}: {e}",
                             field="LRSEARCH_PLUGINS") from e
        loaded.append(name)
    return loaded


def catalog(loaded: Sequence[str]) -> dict[str, Any]:
    """What this process can load, as a worker publishes it: the plugin modules, every custom
    Keras serializable registered (by its registered name, `package>Name`), and the builders
    with their parameters."""
    import keras

    return {"plugins": list(loaded),
            "custom_objects": sorted(keras.saving.get_custom_objects()),
            "builders": [b.as_dict() for b in builders],
            "keras_version": keras.__version__, "backend": keras.backend.backend()}
