"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 from the files Keras' loaders download.

Each file is looked up in the configured data directory, its `datasets/` folder and Keras'
cache ($KERAS_HOME/datasets, default ~/.keras/datasets), and read in the format Keras keeps it
in. Loading never downloads: a dataset registered as a Keras dataset has its files fetched by
the registration job (download.py: where they come from, their digests, and where they are
looked for). When a file is missing, the error names it, the folders it may go in, where to
fetch it, and how to have the service fetch it. The official test split is the validation set.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np

from lrsearch.datasets.base import Dataset, source
from lrsearch.datasets.download import (
    CIFAR10_BATCHES,
    CIFAR10_FOLDERS,
    CIFAR100_BATCHES,
    CIFAR100_FOLDERS,
    DOWNLOADS_SETTING,
    KERAS_DATASETS,
    ORIGINS,
    find,
    find_folder,
    keras_home,
    search_dirs,
)
from lrsearch.errors import DatasetError
from lrsearch.models import Head

__all__ = ["ORIGINS", "find", "keras_home", "search_dirs"]  # the search rules live in download

CIFAR_FILES = ("cifar-10-python.tar.gz", *CIFAR10_FOLDERS)
CIFAR100_FILES = ("cifar-100-python.tar.gz", *CIFAR100_FOLDERS)
FASHION_FILES = tuple(f.name for f in KERAS_DATASETS["fashion_mnist"].files)


def check_available(dataset: str, files: tuple[str, ...], data_dir: Path | None) -> None:
    """Raise the missing-file error unless one of `files` is present (nothing is read)."""
    if files and find(data_dir, *files) is None:
        raise missing(dataset, files[0], data_dir)


def missing(dataset: str, needed: str, data_dir: Path | None) -> DatasetError:
    """The error for a dataset whose files are not on this machine: where they may go, where
    to fetch them, and how to have the service download them."""
    where = ", ".join(str(d) for d in search_dirs(data_dir))
    keras_name = "cifar10" if dataset == "cifar10_cats_dogs" else dataset
    return DatasetError(
        f"Dataset `{dataset}` needs `{needed}`, which is not in any of: {where}. Loading "
        f"never downloads. Either fetch it from {ORIGINS[needed]} and put it in one of those "
        "folders (or set LRSEARCH_DATA_DIR), or have the service download it: with "
        f"{DOWNLOADS_SETTING}=true on the workers, register it under a name of your own "
        f"(`lrsearch datasets register my-{keras_name} "
        f"'{{\"kind\": \"keras\", \"dataset\": \"{keras_name}\"}}'`); once its files are "
        f"there, `{dataset}` works too.", field="dataset")


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
    folder = find_folder(data_dir, ("fashion-mnist",), FASHION_FILES)
    if folder is None:
        raise missing("fashion_mnist", "fashion-mnist", data_dir)
    y_train, x_train, y_test, x_test = (folder / f for f in FASHION_FILES)
    return Dataset(
        "fashion_mnist",
        images(_idx(x_train, 16).reshape(-1, 28, 28)), _idx(y_train, 8).astype(np.int64),
        images(_idx(x_test, 16).reshape(-1, 28, 28)), _idx(y_test, 8).astype(np.int64),
        Head.classes(10))


def _cifar_batch(raw: bytes, labels: bytes = b"labels") -> tuple[np.ndarray, np.ndarray]:
    # The CIFAR "python version" is pickled dicts; these are the files Keras itself reads.
    batch = pickle.loads(raw, encoding="bytes")
    x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, np.asarray(batch[labels], dtype=np.int64)


def _cifar_files(dataset: str, data_dir: Path | None, folders: tuple[str, ...],
                 names: tuple[str, ...], archive_name: str) -> dict[str, bytes]:
    """The batch files `names`, from an extracted folder holding all of them, else from the
    official archive (the first one found)."""
    folder = find_folder(data_dir, folders, names)
    if folder is not None:
        return {n: (folder / n).read_bytes() for n in names}
    archive = find(data_dir, archive_name)
    if archive is None:
        raise missing(dataset, archive_name, data_dir)
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
    files = _cifar_files("cifar10", data_dir, CIFAR10_FOLDERS, CIFAR10_BATCHES,
                         "cifar-10-python.tar.gz")
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



@source("cifar100", "CIFAR-100, 32x32 colour, 100 classes (fine labels; needs "
        "cifar-100-python.tar.gz offline).", (32, 32, 3), Head.classes(100), CIFAR100_FILES)
def cifar100(data_dir: Path | None, val_fraction: float, seed: int) -> Dataset:
    files = _cifar_files("cifar100", data_dir, CIFAR100_FOLDERS, CIFAR100_BATCHES,
                         "cifar-100-python.tar.gz")
    x_train, y_train = _cifar_batch(files["train"], b"fine_labels")
    x_test, y_test = _cifar_batch(files["test"], b"fine_labels")
    return Dataset("cifar100", images(x_train), y_train, images(x_test), y_test,
                   Head.classes(100))
