"""One registry shape for every kind of named thing: schedule families, models, optimizers,
datasets, samplers, pruners, job kinds.

Entries are stored under stable names (the names rows store). Registering a name twice raises;
asking for an unknown name raises the kind's own error (its HTTP status and field), listing the
known names. Pure Python: the API imports registries without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name.

    `kind` is what the error messages call an entry ("model", "optimizer"); `error` is the
    exception raised for an unknown name, constructed as error(message, field=field)."""

    def __init__(self, kind: str, *, error: Callable[..., Exception], field: str,
                 plural: str | None = None) -> None:
        self.kind, self._error, self.field = kind, error, field
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register `entry` under `name`; a name already taken raises ValueError."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: Any) -> T:
        """The entry named `name`; unknown names raise the kind's error listing the known."""
        if not isinstance(name, str) or name not in self._entries:
            known = ", ".join(self.names()) or "none"
            raise self._error(f"Unknown {self.kind} `{name}`. Known {self.plural}: {known}",
                              field=self.field)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)
