"""Datasets: bundled ones, Keras' offline formats on tiny files written here, and uploads."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lrsearch import datasets
from lrsearch.datasets.uploaded import check_npz
from lrsearch.errors import DatasetError
from lrsearch.models import Head
from tests.datasets.test_npz_hardening import header_bytes, npy_bytes, write_zip


def test_digits_is_scaled_and_split_with_the_seed() -> None:
    d = datasets.load("digits", seed=3)
    assert d.input_shape == (8, 8, 1) and d.num_classes == 10 and d.head == Head.classes(10)
    assert datasets.SOURCES.get("digits").head == d.head
    assert {k: d.info()[k] for k in ("task", "num_classes", "target_shape")} == {
        "task": "classes", "num_classes": 10, "target_shape": []}
    assert d.x_train.dtype == np.float32 and d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0
    assert len(d.x_train) + len(d.x_val) == 1797
    assert len(d.x_val) == round(0.2 * 1797)
    again = datasets.load("digits", seed=3)
    assert again is d  # loaded once per process
    other = datasets.load("digits", seed=4)
    assert not np.array_equal(other.y_val, d.y_val)


def test_synthetic_argmax_labels_are_the_argmax() -> None:
    d = datasets.load("synthetic_argmax", seed=1)
    assert d.x_train.shape == (1000, 3) and d.x_val.shape == (200, 3)
    assert np.array_equal(d.y_train, np.argmax(d.x_train, axis=1))


def test_mnist_from_the_keras_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
             y_train=np.arange(6) % 10, x_test=np.full((2, 28, 28), 255, np.uint8),
             y_test=np.array([1, 2]))
    d = datasets.load("mnist", data_dir=tmp_path)
    assert d.x_train.shape == (6, 28, 28, 1) and d.num_classes == 10
    assert d.x_val.max() == 1.0 and d.y_val.tolist() == [1, 2]


def idx_gz(path: Path, array: np.ndarray) -> None:
    header = (struct.pack(">IIII", 2051, len(array), 28, 28) if array.ndim == 3
              else struct.pack(">II", 2049, len(array)))
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_the_idx_files(tmp_path: Path) -> None:
    folder = tmp_path / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    idx_gz(folder / "train-images-idx3-ubyte.gz", np.full((4, 28, 28), 51))
    idx_gz(folder / "train-labels-idx1-ubyte.gz", np.array([0, 9, 3, 3]))
    idx_gz(folder / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    idx_gz(folder / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3]))
    d = datasets.load("fashion_mnist", data_dir=tmp_path)
    assert d.x_train.shape == (4, 28, 28, 1) and d.x_train.max() == pytest.approx(0.2)
    assert d.y_train.tolist() == [0, 9, 3, 3] and d.y_val.tolist() == [1, 2, 3]


def cifar_batch(labels: list[int], fill: int) -> bytes:
    data = np.full((len(labels), 3072), fill, np.uint8)
    data[:, :1024] = 0  # red channel 0, so the channel order is checked
    return pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"})


def write_cifar_tar(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
            raw = cifar_batch([3, 5, i % 10], 255)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def test_cifar10_and_cats_dogs_from_the_official_tarball(tmp_path: Path) -> None:
    write_cifar_tar(tmp_path / "cifar-10-python.tar.gz")
    d = datasets.load("cifar10", data_dir=tmp_path)
    assert d.x_train.shape == (15, 32, 32, 3) and d.x_val.shape == (3, 32, 32, 3)
    assert d.x_train[..., 0].max() == 0.0 and d.x_train[..., 1].min() == 1.0  # HWC, scaled
    cd = datasets.load("cifar10_cats_dogs", data_dir=tmp_path)
    assert cd.num_classes == 2
    assert sorted(set(cd.y_train.tolist())) == [0, 1]
    assert len(cd.x_train) == 10 + 1  # batches 4 and 6 are 3 / 5 again: 2 per batch + 1


def test_cifar10_from_an_extracted_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(cifar_batch([1, 2], 10))
    assert datasets.load("cifar10", data_dir=tmp_path).x_train.shape == (10, 32, 32, 3)


@pytest.mark.parametrize("name,needed", [("mnist", "mnist.npz"),
                                         ("fashion_mnist", "fashion-mnist"),
                                         ("cifar10", "cifar-10-python.tar.gz"),
                                         ("cifar10_cats_dogs", "cifar-10-python.tar.gz")])
def test_missing_keras_file_names_the_file_and_where(tmp_path: Path, monkeypatch, name: str,
                                                     needed: str) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(DatasetError) as info:
        datasets.load(name, data_dir=tmp_path / "data")
    message = str(info.value)
    assert needed in message and str(tmp_path / "data") in message
    assert str(tmp_path / "keras" / "datasets") in message


def test_unknown_dataset_lists_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"Unknown dataset `nope`.*digits"):
        datasets.load("nope", data_dir=tmp_path)


def test_uploaded_npz_is_loaded_by_name(tmp_path: Path) -> None:
    (tmp_path / "uploads").mkdir()
    x = np.random.default_rng(0).random((10, 4))
    np.savez(tmp_path / "uploads" / "mine.npz", x_train=x, y_train=np.arange(10) % 3,
             x_val=x[:4], y_val=np.array([0, 1, 2, 0]))
    d = datasets.load("mine", data_dir=tmp_path)
    assert d.num_classes == 3 and d.input_shape == (4,) and len(d.x_val) == 4


def write(tmp_path: Path, **arrays: object) -> Path:
    path = tmp_path / "up.npz"
    np.savez(path, **arrays)
    return path


GOOD_X = np.zeros((6, 3))
GOOD_Y = np.array([0, 1, 0, 1, 0, 1])


@pytest.mark.parametrize("arrays,field,fragment", [
    ({"y_train": GOOD_Y}, "x_train", "no `x_train`"),
    ({"x_train": GOOD_X, "y_train": GOOD_Y, "extra": GOOD_Y}, "file", "extra"),
    ({"x_train": np.array([[np.nan, 1, 2]] * 6), "y_train": GOOD_Y}, "x_train", "NaN"),
    ({"x_train": np.zeros(6), "y_train": GOOD_Y}, "x_train", "shape"),
    ({"x_train": GOOD_X, "y_train": GOOD_Y[:5]}, "y_train", "one class id per sample"),
    ({"x_train": GOOD_X, "y_train": -GOOD_Y}, "y_train", "negative"),
    ({"x_train": GOOD_X, "y_train": np.zeros(6, np.int64)}, "y_train", "at least 2 classes"),
    ({"x_train": GOOD_X, "y_train": np.zeros(6, bool)}, "y_train", "at least 2 classes"),
    ({"x_train": GOOD_X, "y_train": np.zeros((6, 2), np.int64)}, "y_train",
     "one class id per sample"),
    ({"x_train": GOOD_X, "y_train": np.array([0.5, np.nan, 1, 2, 3, 4])}, "y_train", "NaN"),
    ({"x_train": GOOD_X, "y_train": np.array([0.5, 1, np.inf, 2, 3, 4], np.float32)},
     "y_train", "NaN or infinite"),
    ({"x_train": GOOD_X, "y_train": np.full(6, 1e300)}, "y_train", "beyond float32's range"),
    ({"x_train": GOOD_X, "y_train": np.zeros((6, 2, 2))}, "y_train", "float targets"),
    ({"x_train": GOOD_X, "y_train": np.zeros((6, 0))}, "y_train", "float targets"),
    ({"x_train": GOOD_X, "y_train": np.zeros(5)}, "y_train", "float targets"),
    ({"x_train": GOOD_X, "y_train": np.zeros((6, 3)), "x_val": GOOD_X[:2],
      "y_val": np.zeros((2, 2))}, "y_val", "shape (2,) per sample"),
    ({"x_train": GOOD_X, "y_train": np.zeros(6), "x_val": GOOD_X[:2],
      "y_val": np.array([np.nan, 0])}, "y_val", "NaN"),
    ({"x_train": GOOD_X, "y_train": GOOD_Y, "x_val": GOOD_X[:2], "y_val": np.array([0., 1.])},
     "y_val", "must hold class ids (an integer or bool dtype) like `y_train`"),
    ({"x_train": GOOD_X, "y_train": GOOD_Y * 1.0, "x_val": GOOD_X[:2], "y_val": GOOD_Y[:2]},
     "y_val", "must hold float targets (a float dtype) like `y_train`"),
    ({"x_train": GOOD_X, "y_train": GOOD_Y, "x_val": GOOD_X}, "x_val", "both"),
    ({"x_train": GOOD_X, "y_train": GOOD_Y, "x_val": np.zeros((2, 4)), "y_val": GOOD_Y[:2]},
     "x_val", "shape"),
    ({"x_train": GOOD_X, "y_train": GOOD_Y, "x_val": GOOD_X[:2], "y_val": np.array([0, 7])},
     "y_val", "class 7"),
    ({"x_train": np.array(["a"] * 6)[:, None], "y_train": GOOD_Y}, "x_train", "numbers"),
])
def test_bad_uploads_are_rejected_naming_the_array(tmp_path: Path, arrays: dict, field: str,
                                                   fragment: str) -> None:
    with pytest.raises(DatasetError) as info:
        datasets.load_npz(write(tmp_path, **arrays), "up")
    assert info.value.field == field and fragment in str(info.value)


def test_float_labels_are_targets_kept_as_float32_in_their_shape(tmp_path: Path) -> None:
    """A float `y` is a regression target, whole numbers or not: shape (n,) or (n, k), loaded
    as float32, with a linear head of k outputs (1 for (n,)); check_npz agrees with load_npz."""
    rng = np.random.default_rng(0)
    x = rng.random((10, 4))
    for y, shape in [(rng.normal(size=10), ()), (rng.normal(size=(10, 3)), (3,)),
                     (np.arange(10.0), ())]:
        path = write(tmp_path, x_train=x, y_train=y, x_val=x[:3], y_val=y[:3])
        d = datasets.load_npz(path, "up")
        assert d.head == Head.targets(shape) and d.num_classes is None
        assert d.head.activation == "linear" and d.head.loss == "mse"
        assert d.y_train.dtype == np.float32 and d.y_train.shape == (10, *shape)
        assert d.y_val.dtype == np.float32 and d.y_val.shape == (3, *shape)
        assert np.array_equal(d.y_train, y.astype(np.float32))
        assert d.info()["task"] == "targets" and d.info()["target_shape"] == list(shape)
        assert check_npz(path, max_decompressed_bytes=None).head == d.head
    split = datasets.load_npz(write(tmp_path, x_train=x, y_train=rng.normal(size=(10, 2))), "up")
    assert split.y_train.shape == (8, 2) and split.y_val.shape == (2, 2)


def test_integer_and_bool_labels_are_class_ids(tmp_path: Path) -> None:
    x = np.zeros((6, 3))
    for y in [np.array([0, 1, 2, 0, 1, 2], np.uint8), np.array([[0], [1], [2]] * 2, np.int32)]:
        d = datasets.load_npz(write(tmp_path, x_train=x, y_train=y), "up")
        assert d.head == Head.classes(3) and d.num_classes == 3 and d.y_train.dtype == np.int64
        assert d.info()["task"] == "classes" and d.info()["target_shape"] == []
    d = datasets.load_npz(write(tmp_path, x_train=x, y_train=np.arange(6) % 2 == 0,
                                x_val=x[:2], y_val=np.array([True, True])), "up")
    assert d.head == Head.classes(2) and d.y_val.tolist() == [1, 1]


def test_a_bool_stored_as_another_byte_is_refused(tmp_path: Path) -> None:
    raw = header_bytes((6,), "|b1") + bytes([0, 1, 2, 0, 1, 0])
    path = write_zip(tmp_path / "b.npz", {"x_train.npy": npy_bytes(np.zeros((6, 3))),
                                          "y_train.npy": raw})
    with pytest.raises(DatasetError, match="bool stored as byte 2") as info:
        datasets.load_npz(path, "up")
    assert info.value.field == "y_train"


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, x_train=np.array([{"a": 1}] * 6, dtype=object), y_train=GOOD_Y)
    with pytest.raises(DatasetError, match="without pickle"):
        datasets.load_npz(path, "evil")


def test_garbage_file_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match=r"Not a valid \.npz"):
        datasets.load_npz(path, "junk")


@pytest.mark.parametrize("name", ["../etc", "a/b", "UPPER", "", ".hidden", "x" * 65])
def test_upload_names_cannot_escape_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetError, match="`name`"):
        datasets.upload_path(tmp_path, name)
