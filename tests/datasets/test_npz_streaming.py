"""Uploaded .npz files are read in place for training: stored members (numpy.savez) are
memory-mapped where they lie in the zip, deflated ones (savez_compressed) are inflated once
into the cache and mapped from there; the batches hold exactly the samples `load_npz` gives,
with the same validation split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lrsearch.datasets.streams import from_npz
from lrsearch.datasets.uploaded import inflated_prefix, load_npz, open_npz


def rows(x: np.ndarray) -> list[bytes]:
    return sorted(np.ascontiguousarray(r).tobytes() for r in x)


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
@pytest.mark.parametrize("with_val", [False, True], ids=["held-out", "own-val"])
def test_batches_hold_what_load_npz_loads(tmp_path: Path, compressed: bool,
                                          with_val: bool) -> None:
    rng = np.random.default_rng(3)
    arrays = {"x_train": rng.integers(0, 256, (50, 4, 3), dtype=np.uint8),
              "y_train": rng.integers(0, 3, 50)}
    if with_val:
        arrays.update(x_val=rng.integers(0, 256, (7, 4, 3), dtype=np.uint8),
                      y_val=rng.integers(0, 3, 7))
    path = tmp_path / "up.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    loaded = load_npz(path, "up")
    mapped = open_npz(path, data_dir=tmp_path / "data")
    assert all(isinstance(side[0], np.memmap) for side in (mapped.train, mapped.val))
    data = from_npz(mapped)
    assert (data.train_examples, data.val_examples) == (len(loaded.x_train),
                                                        len(loaded.x_val))
    assert data.input_shape == loaded.input_shape and data.head == loaded.head
    xv, yv = data.val_arrays(100)
    np.testing.assert_array_equal(xv, loaded.x_val)
    np.testing.assert_array_equal(yv, loaded.y_val)
    n = len(loaded.x_train)  # 40 held out of 50, or all 50
    steps = -(-n // 16)
    batches = list(data.train(16, seed=1).take(steps).as_numpy_iterator())  # one pass
    assert [len(b[0]) for b in batches] == [16] * (steps - 1) + [n - 16 * (steps - 1)]
    x = np.concatenate([b[0] for b in batches])
    assert x.dtype == np.float32 and rows(x) == rows(loaded.x_train)
    inflated = list(inflated_prefix(tmp_path / "data", path).parent.glob("*/x_train.npy"))
    assert len(inflated) == (1 if compressed else 0)
    if compressed:  # a second trial maps the inflated file again, without rewriting it
        before = inflated[0].stat().st_mtime_ns
        open_npz(path, data_dir=tmp_path / "data")
        assert inflated[0].stat().st_mtime_ns == before


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_fortran_order_arrays_map_to_the_same_values(tmp_path: Path, compressed: bool) -> None:
    x = np.asfortranarray(np.arange(60, dtype=np.float32).reshape(20, 3))
    path = tmp_path / "f.npz"
    (np.savez_compressed if compressed else np.savez)(path, x_train=x,
                                                       y_train=np.arange(20) % 2)
    mapped = open_npz(path, data_dir=tmp_path / "data")
    np.testing.assert_array_equal(mapped.train[0], x)
    assert not list((tmp_path / "data").rglob("*.part"))  # nothing half-written left
