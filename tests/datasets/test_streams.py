"""Streams over registered data references (and in-memory arrays): every training example
once a pass, seeded orders, stable validation, registered shapes, and refusal of a dataset
changed since registration."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from lrsearch.datasets.base import Dataset
from lrsearch.datasets.references import (
    Csv,
    DatasetChanged,
    Feature,
    ImageFolder,
    Npy,
    Registered,
    Source,
    TFRecord,
    val_mask,
)
from lrsearch.datasets.register import register
from lrsearch.datasets.streams import Input, StreamOptions, from_arrays, from_source
from lrsearch.models import Head
from tests.datasets.data_files import write_csv, write_image_folder, write_npy, write_tfrecord

BATCH = 4


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("streams")


@pytest.fixture(scope="module")
def sources(root: Path) -> dict[str, tuple[Source, Registered]]:
    """One registered source of each kind whose examples are told apart by their first
    input value (images: by their pixel sums)."""
    write_csv(root / "csv" / "a.csv", 9, regression=False)
    b = write_csv(root / "csv" / "b.csv", 11, regression=False)
    header, *rows = b.read_text().splitlines()  # f0 of b.csv: 100 + row, unlike a.csv's
    b.write_text("\n".join([header] + [f"{100 + float(r.split(',')[0]):g},"
                                        + r.split(",", 1)[1] for r in rows]) + "\n")
    images = write_image_folder(root / "img", {"a": 5, "b": 4, "c": 3})
    built: dict[str, Source] = {
        "images": ImageFolder(uri=str(images),
                              image_size=(6, 5), color_mode="rgb", val_fraction=0.25),
        "csv": Csv(uri=str(root / "csv"), target="y", task="classes", val_fraction=0.2),
        "tfrecord": TFRecord(uri=str(write_tfrecord(root / "rec" / "r.tfrecord", 18)),
                             input="x", target="y", val_fraction=0.3,
                             features={"x": Feature(dtype="float32", shape=(4,)),
                                       "y": Feature(dtype="int64")}),
        "npy": Npy(uri=str(write_npy(root / "npy", 17, shape=(2, 2))), val_fraction=0.2),
    }
    return {kind: (s, register(s, [str(root)])) for kind, s in built.items()}


def ids(x: np.ndarray) -> list[float]:
    """What tells examples apart: the first value (rows) or the pixel sum (images)."""
    flat = x.reshape(len(x), -1)
    return [round(float(v), 3) for v in (flat.sum(axis=1) if flat.shape[1] == 90
                                         else flat[:, 0])]


def passes(ds: tf.data.Dataset, batches: int, count: int) -> list[tuple[list[float], list[int]]]:
    """`count` passes of `batches` batches each: (example ids, labels) per pass."""
    out: list[tuple[list[float], list[int]]] = []
    it = ds.as_numpy_iterator()
    for _ in range(count):
        xs, ys = [], []
        for _ in range(batches):
            x, y = next(it)
            xs += ids(x)
            ys += np.asarray(y).reshape(len(y)).tolist()
        out.append((xs, ys))
    return out


@pytest.mark.parametrize("kind", ["images", "csv", "tfrecord", "npy"])
def test_a_pass_holds_every_training_example_once_in_seeded_orders(
        kind: str, sources: dict[str, tuple[Source, Registered]], root: Path) -> None:
    source, reg = sources[kind]
    data = from_source("d", source, reg, [str(root)], StreamOptions(shuffle_buffer=8))
    assert (data.train_examples, data.val_examples) == (reg.train_examples, reg.val_examples)
    assert data.input_shape == reg.input_shape and data.head == reg.head
    n, per = reg.train_examples, math.ceil(reg.train_examples / BATCH)
    train = data.train(BATCH, seed=3)
    x_spec, y_spec = train.element_spec
    assert x_spec.dtype == tf.float32 and x_spec.shape.as_list() == [None, *reg.input_shape]
    assert y_spec.dtype == tf.int64 and y_spec.shape.as_list() == [None]
    first, second = passes(train, per, 2)
    sizes = [len(x) for x, _ in data.train(BATCH, seed=3).take(per).as_numpy_iterator()]
    assert sizes == [BATCH] * (n // BATCH) + ([n % BATCH] if n % BATCH else [])
    val_ids, _ = passes(data.val(BATCH), math.ceil(reg.val_examples / BATCH), 1)[0]
    assert len(first[0]) == n and len(set(first[0])) == n  # each training example once
    assert sorted(first[0]) == sorted(second[0]) and first[0] != second[0]  # a new order
    assert not set(first[0]) & set(val_ids)  # validation examples are not trained on
    fresh = from_source("d", source, reg, [str(root)], StreamOptions(shuffle_buffer=8))
    again = passes(fresh.train(BATCH, seed=3), per, 2)
    assert again == [first, second]  # the same seed, the same sequence of orders
    assert passes(data.train(BATCH, seed=4), per, 1)[0] != first
    labels = dict(zip(first[0], first[1], strict=True))
    assert set(labels.values()) <= set(range(reg.num_classes or 0))


@pytest.mark.parametrize("kind", ["csv", "tfrecord", "npy"])
def test_validation_is_the_split_rule_in_a_stable_order(
        kind: str, sources: dict[str, tuple[Source, Registered]], root: Path) -> None:
    source, reg = sources[kind]
    assert isinstance(source, Csv | TFRecord | Npy)
    data = from_source("d", source, reg, [str(root)])
    total = reg.train_examples + reg.val_examples
    expected = np.flatnonzero(val_mask(total, source.val_fraction)).tolist()
    if kind == "csv":  # a.csv holds rows 0..8 (f0 = row), b.csv rows 0..10 (f0 = 100 + row)
        expected = [i if i < 9 else 100 + i - 9 for i in expected]
    per = math.ceil(reg.val_examples / BATCH)
    one, two = passes(data.val(BATCH), per, 2)
    assert one == two and one[0] == [float(i) for i in expected]
    x, y = data.val_arrays(3)
    assert x.shape == (3, *reg.input_shape) and x.dtype == np.float32
    assert ids(x) == one[0][:3] and y.tolist() == one[1][:3]
    assert len(data.val_arrays(1000)[0]) == reg.val_examples


def test_images_decode_to_the_registered_shape_in_0_1(
        sources: dict[str, tuple[Source, Registered]], root: Path) -> None:
    source, reg = sources["images"]
    cached = from_source("d", source, reg, [str(root)],
                         StreamOptions(cache="disk", cache_dir=str(root / "cache")))
    x, _ = cached.val_arrays(10)
    assert x.shape == (3, 6, 5, 3) and x.min() >= 0.0 and x.max() <= 1.0
    per = math.ceil(reg.train_examples / BATCH)
    plain = from_source("d", source, reg, [str(root)])
    a = passes(cached.train(BATCH, seed=1), per, 2)
    b = passes(plain.train(BATCH, seed=1), per, 2)
    assert [sorted(p[0]) for p in a] == [sorted(p[0]) for p in b]
    assert any((root / "cache").iterdir())
    cached.close()  # what training does when the run ends: the run's disk cache goes
    assert not any((root / "cache").iterdir())


def test_a_changed_dataset_is_refused(tmp_path: Path) -> None:
    write_csv(tmp_path / "d" / "a.csv", 10)
    source = Csv(uri=str(tmp_path / "d"), target="y")
    reg = register(source, [str(tmp_path)])
    from_source("mine", source, reg, [str(tmp_path)])
    write_csv(tmp_path / "d" / "b.csv", 3)
    with pytest.raises(DatasetChanged, match="`mine` are not the registered ones: dataset "
                       "changed since registration") as e:
        from_source("mine", source, reg, [str(tmp_path)])
    assert e.value.field == "dataset"
    os.remove(tmp_path / "d" / "b.csv")
    stat = os.stat(tmp_path / "d" / "a.csv")
    os.utime(tmp_path / "d" / "a.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(DatasetChanged):
        from_source("mine", source, reg, [str(tmp_path)])


def test_arrays_stream_like_files() -> None:
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    y = np.arange(10, dtype=np.float32)
    data: Input = from_arrays(Dataset("t", x[:7], y[:7], x[7:], y[7:], Head.targets(())))
    assert (data.train_examples, data.val_examples, data.input_shape) == (7, 3, (1,))
    first, second = passes(data.train(3, seed=0), 3, 2)
    assert sorted(first[0]) == list(range(7)) and first[0] != second[0]
    assert passes(data.val(2), 2, 2) == [([7.0, 8.0, 9.0], [7, 8, 9])] * 2
    assert data.val_arrays(2)[0].tolist() == [[7.0], [8.0]]


def test_a_validation_uri_is_read_whole_and_files_are_shuffled(tmp_path: Path) -> None:
    for name, start in (("a", 0), ("b", 50), ("c", 200)):
        path = write_csv(tmp_path / "train" / f"{name}.csv", 4)
        header, *rows = path.read_text().splitlines()  # features shifted by `start`
        shifted = [",".join([*(f"{start + float(v):g}" for v in r.split(",")[:3]),
                             r.split(",")[3]]) for r in rows]
        path.write_text("\n".join([header, *shifted]) + "\n")
    write_csv(tmp_path / "val.csv", 3)
    source = Csv(uri=str(tmp_path / "train"), validation_uri=str(tmp_path / "val.csv"),
                 target="y", features=("f1", "f0"))
    reg = register(source, [str(tmp_path)])
    assert (reg.train_examples, reg.val_examples, reg.input_shape) == (12, 3, (2,))
    data = from_source("d", source, reg, [str(tmp_path)], StreamOptions(shuffle_buffer=1))
    _, y_spec = data.train(5, seed=0).element_spec
    assert y_spec.dtype == tf.float32 and y_spec.shape.as_list() == [None]
    # A buffer of one row: only the file order changes between passes.
    orders = [[int(v) // 50 for v in p[0]] for p in passes(data.train(4, seed=0), 3, 4)]
    assert all(sorted(o) == [0] * 4 + [1] * 4 + [4] * 4 for o in orders)
    assert len({tuple(o) for o in orders}) > 1
    x, y = data.val_arrays(5)
    assert x[:, 1].tolist() == [0.0, 1.0, 2.0] and y.tolist() == [1.0, 3.0, 5.0]
