"""The Dataset record, the seeded validation split, and the dataset registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrsearch.errors import DatasetError


@dataclass(frozen=True)
class Dataset:
    """Arrays ready for training: x float32 (images scaled to [0, 1]), y int64 class ids."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def info(self) -> dict[str, object]:
        """Plain-data summary (what the API lists)."""
        return {"name": self.name, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "train_samples": len(self.x_train),
                "val_samples": len(self.x_val)}


def split(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle with `seed` and hold out round(val_fraction * n) samples (at least one)."""
    if not 0 < val_fraction < 1:
        raise DatasetError(f"Argument `val_fraction` must be in (0, 1). Received: "
                           f"val_fraction={val_fraction!r}", field="val_fraction")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, round(val_fraction * len(x)))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


@dataclass(frozen=True)
class Source:
    """A named dataset: `load(data_dir, val_fraction, seed)` builds it."""

    name: str
    description: str
    load: Callable[[Path | None, float, int], Dataset]


SOURCES: dict[str, Source] = {}


def source(name: str, description: str) -> Callable[[Callable[[Path | None, float, int], Dataset]],
                                                     Callable[[Path | None, float, int], Dataset]]:
    """Decorator: register a loader under a stable name (duplicates raise)."""

    def wrap(fn: Callable[[Path | None, float, int], Dataset]
             ) -> Callable[[Path | None, float, int], Dataset]:
        if name in SOURCES:
            raise ValueError(f"dataset {name!r} is already registered")
        SOURCES[name] = Source(name, description, fn)
        return fn

    return wrap
