"""Datasets by name: bundled (digits, synthetic_argmax), Keras' offline cache (mnist,
fashion_mnist, cifar10, cifar10_cats_dogs) and uploaded .npz files.

`load(name, ...)` returns a Dataset (float32 inputs, a validation set, and either int64 class
ids or float32 targets, as its `head` says), loaded once per process and cached. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrsearch.datasets import bundled, keras_cache  # noqa: F401  (registers the sources)
from lrsearch.datasets.base import SOURCES, Dataset
from lrsearch.datasets.references import (
    KerasDataset,
    Registered,
    Source,
    SourceAdapter,
    apart_from,
)
from lrsearch.datasets.uploaded import check_name, load_npz, upload_path
from lrsearch.errors import DatasetError

__all__ = [
    "SOURCES",
    "Dataset",
    "builtin_names",
    "check_available",
    "describe",
    "load",
    "load_npz",
    "path_labels",
    "register_source",
    "upload_path",
]


def register_source(source: dict[str, Any] | Source, *, roots: Sequence[str],
                    data_dir: str | Path, downloads: Mapping[str, Any] | None = None
                    ) -> Registered:
    """Register a dataset reference (what a worker's `dataset` job runs): read its files
    once (lrsearch.datasets.register), or, for a Keras dataset, download its files when
    missing (lrsearch.datasets.download; `downloads` are DownloadSettings' fields) and count
    them. Raises DatasetError with the reason."""
    ref = SourceAdapter.validate_python(source) if isinstance(source, dict) else source
    if not isinstance(ref, KerasDataset):
        from lrsearch.datasets.register import register

        apart_from(ref, data_dir, "the service's data directory")
        return register(ref, roots)
    from lrsearch.datasets.download import DownloadSettings, ensure

    folder = Path(data_dir).expanduser().resolve()
    ensure(ref.dataset, folder, DownloadSettings(**dict(downloads or {})))
    data = _load(ref.dataset, folder, 0.2, 0, None, None)
    return Registered.of(len(data.x_train), len(data.x_val), data.input_shape, data.head, "")


def builtin_names() -> list[str]:
    return SOURCES.names()


def describe(data_dir: str | Path | None = None) -> list[dict[str, object]]:
    """Every built-in dataset, and whether its files are present (nothing is loaded)."""
    out = []
    for s in SOURCES:
        try:
            check_available(s.name, data_dir=data_dir)
            available = True
        except DatasetError:
            available = False
        out.append({**s.info(), "available": available})
    return out


def path_labels(data_dir: str | Path | None = None, roots: Sequence[str] = ()
                ) -> dict[str, str]:
    """The folders dataset messages name, each with the label `lrsearch.errors.redact_paths`
    puts in its place when a message leaves the server: `<data_dir>` and `<keras_home>`
    (Keras' folder, ~/.keras unless $KERAS_HOME says otherwise). The local data roots keep
    their own names: tenants write URIs under them, so a message about one of their files
    shows the path they gave."""
    labels = {str(keras_cache.keras_home().expanduser().resolve()): "<keras_home>"}
    labels.update({root.rstrip("/"): root.rstrip("/") for root in roots if root.startswith("/")})
    if data_dir is not None:
        labels[str(Path(data_dir).expanduser().resolve())] = "<data_dir>"
    return labels


def check_available(name: str, *, data_dir: str | Path | None = None) -> None:
    """Raise DatasetError (naming the file and folders) when a built-in dataset's files are
    missing; cheap: looks for the files without reading them."""
    SOURCES.get(name)  # DatasetError listing the built-in datasets
    folder = None if data_dir is None else Path(data_dir).expanduser().resolve()
    keras_cache.check_available(name, SOURCES.get(name).files, folder)


def load(name: str, *, data_dir: str | Path | None = None, val_fraction: float = 0.2,
         seed: int = 0, file: str | Path | None = None, task: str | None = None) -> Dataset:
    """A dataset by name. An uploaded one is read from `file` when given (the service keeps
    uploads per tenant), else from `<data_dir>/uploads/<name>.npz`; `task` is the one the
    service registered it with (see uploaded.load_npz)."""
    folder = None if data_dir is None else Path(data_dir).expanduser().resolve()
    path = None if file is None else Path(file).expanduser().resolve()
    return _load(name, folder, float(val_fraction), int(seed), path, task)


@functools.lru_cache(maxsize=8)
def _load(name: str, data_dir: Path | None, val_fraction: float, seed: int,
          file: Path | None, task: str | None = None) -> Dataset:
    if name in SOURCES:
        return SOURCES.get(name).load(data_dir, val_fraction, seed)
    check_name(name)
    if file is not None:
        if not file.exists():
            raise DatasetError(f"The file of dataset `{name}` is missing: {file}",
                               field="dataset")
        return load_npz(file, name, task=task)
    path = upload_path(data_dir, name) if data_dir is not None else None
    if path is None or not path.exists():
        raise DatasetError(f"Unknown dataset `{name}`. Built-in datasets: "
                           f"{', '.join(SOURCES.names())}; uploaded ones live in "
                           "<data_dir>/uploads/.",
                           field="dataset")
    return load_npz(path, name)
