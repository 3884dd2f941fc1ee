"""MNIST, Fashion-MNIST and CIFAR-10 from the files Keras' loaders download, read offline.

Nothing is ever downloaded: each file is looked up in the configured data directory and in
Keras' cache ($KERAS_HOME/datasets, default ~/.keras/datasets), and read in the format Keras
keeps it in. When it is missing, the error names the file and the folders it may go in.
The official test split is the validation set.
"""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from lrsearch.datasets.base import Dataset, source
from lrsearch.errors import DatasetError
from lrsearch.models import Head

ORIGINS = {
    "mnist.npz": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    "fashion-mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    "cifar-10-python.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
}
CIFAR_FILES = ("cifar-10-python.tar.gz", "cifar-10-batches-py",
               "cifar-10-batches-py_extracted/cifar-10-batches-py")
FASHION_FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")


def keras_home() -> Path:
    """Keras' own folder ($KERAS_HOME, default ~/.keras); its cache is `datasets/` in it."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


def search_dirs(data_dir: Path | None) -> list[Path]:
    """Where dataset files are looked for, in order."""
    dirs = [data_dir, data_dir / "datasets"] if data_dir is not None else []
    return [*dirs, keras_home() / "datasets"]


def find(data_dir: Path | None, *candidates: str) -> Path | None:
    """The first existing path among candidates (relative names) in the search dirs."""
    for folder in search_dirs(data_dir):
        for name in candidates:
            if (folder / name).exists():
                return folder / name
    return None


def check_available(dataset: str, files: tuple[str, ...], data_dir: Path | None) -> None:
    """Raise the missing-file error unless one of `files` is present (nothing is read)."""
    if files and find(data_dir, *files) is None:
        raise missing(dataset, files[0], data_dir)


def missing(dataset: str, needed: str, data_dir: Path | None) -> DatasetError:
    where = ", ".join(str(d) for d in search_dirs(data_dir))
    return DatasetError(
        f"Dataset `{dataset}` needs `{needed}`, which is not in any of: {where}. This service "
        f"never downloads; fetch it on a machine with internet from {ORIGINS[needed]} and put "
        "it in one of those folders (or set LRSEARCH_DATA_DIR).", field="dataset")


def images(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], with a channel axis for grey images."""
    x = x.astype(np.float32) / 255.0
    return x[..., None] if x.ndim == 3 else x


@source("mnist", "MNIST handwritten digits, 28x28 grey (needs mnist.npz offline).",
        (28, 28, 1), Head.classes(10), ("mnist.npz",))
def mnist(data_dir: Path | None, val_fraction: float, seed: int) -> Dataset:
    path = find(data_dir, "mnist.npz")
    if path is None:
        raise missing("mnist", "mnist.npz", data_dir)
    with np.load(path, allow_pickle=False) as f:
        return Dataset("mnist", images(f["x_train"]), f["y_train"].astype(np.int64),
                       images(f["x_test"]), f["y_test"].astype(np.int64), Head.classes(10))


def _idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


@source("fashion_mnist", "Fashion-MNIST, 28x28 grey (needs the fashion-mnist/ folder offline).",
        (28, 28, 1), Head.classes(10), ("fashion-mnist",))
def fashion_mnist(data_dir: Path | None, val_fraction: float, seed: int) -> Dataset:
    folder = find(data_dir, "fashion-mnist")
    if folder is None or not all((folder / f).exists() for f in FASHION_FILES):
        raise missing("fashion_mnist", "fashion-mnist", data_dir)
    y_train, x_train, y_test, x_test = (folder / f for f in FASHION_FILES)
    return Dataset(
        "fashion_mnist",
        images(_idx(x_train, 16).reshape(-1, 28, 28)), _idx(y_train, 8).astype(np.int64),
        images(_idx(x_test, 16).reshape(-1, 28, 28)), _idx(y_test, 8).astype(np.int64),
        Head.classes(10))


def _cifar_batch(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    # The CIFAR-10 "python version" is pickled dicts; these are the files Keras itself reads.
    batch = pickle.loads(raw, encoding="bytes")
    x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, np.asarray(batch[b"labels"], dtype=np.int64)


def _cifar_files(data_dir: Path | None) -> dict[str, bytes]:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    folder = find(data_dir, "cifar-10-batches-py",
                  "cifar-10-batches-py_extracted/cifar-10-batches-py")
    if folder is not None and all((folder / n).exists() for n in names):
        return {n: (folder / n).read_bytes() for n in names}
    archive = find(data_dir, "cifar-10-python.tar.gz")
    if archive is None:
        raise missing("cifar10", "cifar-10-python.tar.gz", data_dir)
    out = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            base = member.name.rsplit("/", 1)[-1]
            if base in names and member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                out[base] = handle.read()
    if set(out) != set(names):
        raise DatasetError(f"{archive} lacks {sorted(set(names) - set(out))}", field="dataset")
    return out


def _cifar(data_dir: Path | None) -> tuple[np.ndarray, ...]:
    files = _cifar_files(data_dir)
    parts = [_cifar_batch(files[f"data_batch_{i}"]) for i in range(1, 6)]
    x_test, y_test = _cifar_batch(files["test_batch"])
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return x_train, y_train, x_test, y_test


@source("cifar10", "CIFAR-10, 32x32 colour, 10 classes (needs cifar-10-python.tar.gz offline).",
        (32, 32, 3), Head.classes(10), CIFAR_FILES)
def cifar10(data_dir: Path | None, val_fraction: float, seed: int) -> Dataset:
    x_train, y_train, x_test, y_test = _cifar(data_dir)
    return Dataset("cifar10", images(x_train), y_train, images(x_test), y_test,
                   Head.classes(10))


@source("cifar10_cats_dogs", "Seed 000's binary task: CIFAR-10 cats (class 3 -> 0) against "
        "dogs (class 5 -> 1).", (32, 32, 3), Head.classes(2), CIFAR_FILES)
def cifar10_cats_dogs(data_dir: Path | None, val_fraction: float, seed: int) -> Dataset:
    x_train, y_train, x_test, y_test = _cifar(data_dir)

    def pick(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = (y == 3) | (y == 5)
        return images(x[keep]), (y[keep] == 5).astype(np.int64)

    return Dataset("cifar10_cats_dogs", *pick(x_train, y_train), *pick(x_test, y_test),
                   Head.classes(2))

