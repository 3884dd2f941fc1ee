"""The Dataset record, the seeded validation split, and the dataset registry.

A dataset is one of two tasks, told by its `head` (lrsearch.models.Head): class ids (int64
labels, a softmax head) or float targets (float32, a linear head)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrsearch.errors import DatasetError
from lrsearch.models import Head
from lrsearch.registry import Registry


@dataclass(frozen=True)
class Dataset:
    """Arrays ready for training: x float32 (images scaled to [0, 1]); y int64 class ids
    (shape (n,)) when head.kind is "classes", float32 targets of shape (n, *head.target_shape)
    when it is "targets"."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    head: Head

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int | None:
        """The number of classes; None for float targets."""
        return self.head.num_classes

    def info(self) -> dict[str, object]:
        """Plain-data summary (what the API lists): task, num_classes, target_shape too."""
        return {"name": self.name, "input_shape": list(self.input_shape),
                **self.head.as_dict(), "train_samples": len(self.x_train),
                "val_samples": len(self.x_val)}


def split(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle with `seed` and hold out round(val_fraction * n) samples (at least one)."""
    if not 0 < val_fraction < 1:
        raise DatasetError(f"Argument `val_fraction` must be in (0, 1). Received: "
                           f"val_fraction={val_fraction!r}", field="val_fraction")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = holdout_size(len(x), val_fraction)
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def holdout_size(n: int, val_fraction: float) -> int:
    """How many of `n` samples `split` holds out: round(val_fraction * n), at least one."""
    return max(1, round(val_fraction * n))


Loader = Callable[[Path | None, float, int], Dataset]


@dataclass(frozen=True)
class Source:
    """A named dataset: `load(data_dir, val_fraction, seed)` builds it. `input_shape` and
    `head` are known without loading; `files` are the on-disk names it needs (any one), so
    availability can be checked cheaply."""

    name: str
    description: str
    input_shape: tuple[int, ...]
    head: Head
    load: Loader
    files: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int | None:
        return self.head.num_classes

    def info(self) -> dict[str, object]:
        return {"name": self.name, "builtin": True, "description": self.description,
                "input_shape": list(self.input_shape), **self.head.as_dict(),
                "files": list(self.files)}


SOURCES: Registry[Source] = Registry("dataset", error=DatasetError, field="dataset")


def source(name: str, description: str, input_shape: tuple[int, ...], head: Head,
           files: tuple[str, ...] = ()) -> Callable[[Loader], Loader]:
    """Decorator: register a loader under a stable name (duplicates raise)."""

    def wrap(fn: Loader) -> Loader:
        SOURCES.add(name, Source(name, description, input_shape, head, fn, files))
        return fn

    return wrap
