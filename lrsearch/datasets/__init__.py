"""Datasets by name: bundled (digits, synthetic_argmax), Keras' offline cache (mnist,
fashion_mnist, cifar10, cifar10_cats_dogs) and uploaded .npz files.

`load(name, ...)` returns a Dataset (float32 inputs, int64 labels, a validation set), loaded
once per process and cached. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import functools
from pathlib import Path

from lrsearch.datasets import bundled, keras_cache  # noqa: F401  (registers the sources)
from lrsearch.datasets.base import SOURCES, Dataset
from lrsearch.datasets.uploaded import check_name, load_npz, upload_path
from lrsearch.errors import DatasetError

__all__ = ["Dataset", "builtin_names", "describe", "load", "load_npz", "upload_path"]


def builtin_names() -> list[str]:
    return list(SOURCES)


def describe() -> list[dict[str, str]]:
    """Name and description of every built-in dataset."""
    return [{"name": s.name, "description": s.description} for s in SOURCES.values()]


def load(name: str, *, data_dir: str | Path | None = None, val_fraction: float = 0.2,
         seed: int = 0) -> Dataset:
    """A dataset by name; uploaded datasets are looked up under `<data_dir>/uploads/`."""
    folder = None if data_dir is None else Path(data_dir).expanduser().resolve()
    return _load(name, folder, float(val_fraction), int(seed))


@functools.lru_cache(maxsize=8)
def _load(name: str, data_dir: Path | None, val_fraction: float, seed: int) -> Dataset:
    if name in SOURCES:
        return SOURCES[name].load(data_dir, val_fraction, seed)
    check_name(name)
    path = upload_path(data_dir, name) if data_dir is not None else None
    if path is None or not path.exists():
        raise DatasetError(f"Unknown dataset `{name}`. Built-in datasets: "
                           f"{', '.join(SOURCES)}; uploaded ones live in <data_dir>/uploads/.",
                           field="dataset")
    return load_npz(path, name)
