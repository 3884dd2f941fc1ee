"""Hostile .npz files: the zip directory and the .npy headers are checked before anything is
allocated, values are checked a chunk at a time, and a file whose declared sizes lie is
refused naming the array."""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy

from lrsearch import datasets
from lrsearch.datasets.npz import DatasetTooLarge
from lrsearch.datasets.uploaded import check_npz
from lrsearch.errors import DatasetError

Y = np.array([0, 1, 0, 1, 0, 1])


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    npy.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def header_bytes(shape: tuple[int, ...], dtype: str = "<f8", version: tuple[int, int] = (1, 0)
                 ) -> bytes:
    buffer = io.BytesIO()
    d = {"descr": dtype, "fortran_order": False, "shape": shape}
    if version == (1, 0):
        npy.write_array_header_1_0(buffer, d)
    else:
        npy.write_array_header_2_0(buffer, d)
    raw = buffer.getvalue()
    return raw[:6] + bytes(version) + raw[8:]  # (3, 0): a version numpy writes for utf-8 names


def write_zip(path: Path, members: dict[str, bytes],
              method: int = zipfile.ZIP_DEFLATED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we write
        with zipfile.ZipFile(path, "w", method) as zf:
            for name, data in members.items():
                zf.writestr(name.split("#")[0], data)
    return path


def patch_size(data: bytes, name: str, file_size: int) -> bytes:
    """`data` (a zip) with the uncompressed size of member `name` replaced in both its local
    header and its central-directory entry: a zip that lies about its sizes."""
    out = bytearray(data)
    encoded = name.encode()
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = out.find(signature)
        while at >= 0:
            length = struct.unpack_from("<H", out, at + 28)[0]
            if bytes(out[at + name_at:at + name_at + length]) == encoded:
                struct.pack_into("<L", out, at + size_at, file_size)
            at = out.find(signature, at + 4)
    return bytes(out)


def refused(path: Path) -> DatasetError:
    """Both readers refuse the file the same way; the error of the bounded one."""
    with pytest.raises(DatasetError) as loaded:
        datasets.load_npz(path, "up")
    with pytest.raises(DatasetError) as checked:
        check_npz(path, max_decompressed_bytes=None)
    assert (loaded.value.field, str(loaded.value)) == (checked.value.field, str(checked.value))
    return checked.value


def test_a_header_claiming_ten_trillion_rows_is_refused_naming_the_array(tmp_path: Path
                                                                          ) -> None:
    lying = header_bytes((10**13, 1)) + np.zeros(6).tobytes()
    error = refused(write_zip(tmp_path / "lie.npz", {"x_train.npy": lying,
                                                     "y_train.npy": npy_bytes(Y)}))
    assert error.field == "x_train"
    assert "declares shape (10000000000000, 1)" in str(error) and "48 bytes" in str(error)


def test_a_header_longer_than_numpy_allows_is_not_read(tmp_path: Path) -> None:
    # Version 2.0 lets the header length be 4 GB; the prefix claims 2 GB here.
    huge = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2_000_000_000) + b" " * 100
    error = refused(write_zip(tmp_path / "h.npz", {"x_train.npy": huge,
                                                   "y_train.npy": npy_bytes(Y)}))
    assert error.field == "x_train" and "header longer than" in str(error)


@pytest.mark.parametrize("members,field,fragment", [
    ({"x_train.npy": b"not an npy file at all", "y_train.npy": npy_bytes(Y)},
     "x_train", "no valid .npy header"),
    ({"x_train.npy": header_bytes((6, 3), "<c16"), "y_train.npy": npy_bytes(Y)},
     "x_train", "must hold numbers"),
    ({"x_train.npy": header_bytes((6, 3), "<f4", (3, 0)), "y_train.npy": npy_bytes(Y)},
     "x_train", "version"),
    ({"x_train.npy": npy_bytes(np.zeros((6, 3))), "y_train.npy": npy_bytes(Y),
      "y_train.npy#again": npy_bytes(Y)}, "y_train", "more than once"),
    ({"x_train.npy": npy_bytes(np.zeros((6, 3))), "y_train": npy_bytes(Y)},
     "file", "Unknown member `y_train`"),
    ({"x_train.npy": npy_bytes(np.zeros((6, 3))), "sub/y_train.npy": npy_bytes(Y)},
     "file", "Unknown member `sub/y_train.npy`"),
])
def test_directory_and_header_rules(tmp_path: Path, members: dict[str, bytes], field: str,
                                    fragment: str) -> None:
    error = refused(write_zip(tmp_path / "f.npz", members))
    assert error.field == field and fragment in str(error), str(error)


def test_only_stored_and_deflate_members_are_read(tmp_path: Path) -> None:
    members = {"x_train.npy": npy_bytes(np.zeros((6, 3))), "y_train.npy": npy_bytes(Y)}
    error = refused(write_zip(tmp_path / "b.npz", members, zipfile.ZIP_BZIP2))
    assert error.field == "x_train" and "method 12" in str(error)
    stored = write_zip(tmp_path / "s.npz", members, zipfile.ZIP_STORED)
    assert check_npz(stored, max_decompressed_bytes=None).train_samples == 5


def test_a_directory_of_many_members_is_refused_from_its_end_record(tmp_path: Path) -> None:
    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(5000):
            zf.writestr(f"m{i}", b"")
    error = refused(path)
    assert error.field == "file" and "lists 5000 members" in str(error)


def test_data_longer_than_the_declared_size_is_refused(tmp_path: Path) -> None:
    x = npy_bytes(np.ones((6, 3)))
    honest = write_zip(tmp_path / "h.npz", {"x_train.npy": x + bytes(1_000_000),
                                            "y_train.npy": npy_bytes(Y)}).read_bytes()
    path = tmp_path / "long.npz"
    path.write_bytes(patch_size(honest, "x_train.npy", len(x)))
    error = refused(path)
    assert error.field == "x_train" and "more data than the" in str(error)


def test_data_shorter_than_the_declared_size_is_refused(tmp_path: Path) -> None:
    x = npy_bytes(np.ones((6, 3)))
    honest = write_zip(tmp_path / "h.npz", {"x_train.npy": x[:-8],
                                            "y_train.npy": npy_bytes(Y)}).read_bytes()
    path = tmp_path / "short.npz"
    path.write_bytes(patch_size(honest, "x_train.npy", len(x)))
    error = refused(path)
    assert error.field == "x_train" and "ends after 136 of the 144 bytes" in str(error)


def write_bomb(path: Path, rows: int, features: int) -> Path:
    """x_train: rows x features float32 zeros, deflated (about 1000:1), written as a stream."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x_train.npy", "w", force_zip64=True) as member:
            member.write(header_bytes((rows, features), "<f4"))
            zeros = bytes(1 << 20)
            left = rows * features * 4
            while left:
                member.write(zeros[:min(left, len(zeros))])
                left -= min(left, len(zeros))
        zf.writestr("y_train.npy", npy_bytes(np.arange(rows, dtype=np.uint8) % 2))
    return path


def test_a_compression_bomb_is_checked_in_bounded_memory(tmp_path: Path) -> None:
    path = write_bomb(tmp_path / "bomb.npz", 1 << 16, 1024)  # 256 MiB of zeros
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        summary = check_npz(path, max_decompressed_bytes=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.train_samples + summary.val_samples == 1 << 16
    assert summary.decompressed_bytes > 256 << 20
    assert peak < 32 << 20, f"peak {peak} bytes"


def test_the_declared_total_is_bounded_before_decompressing(tmp_path: Path) -> None:
    path = write_bomb(tmp_path / "bomb.npz", 1 << 12, 1024)  # 16 MiB of zeros
    with pytest.raises(DatasetTooLarge) as info:
        check_npz(path, max_decompressed_bytes=10_000_000)
    assert "max_decompressed_bytes=10000000" in str(info.value)
    assert f"x_train={(1 << 12) * 1024 * 4 + 128}" in str(info.value)


def test_both_readers_agree_on_every_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.asfortranarray(rng.integers(0, 256, (40, 5, 3), dtype=np.uint8))
    y = rng.integers(0, 4, (40, 1)).astype(">i8")  # big-endian class ids, a column
    xv, yv = rng.random((7, 5, 3)).astype(">f4"), np.array([0, 1, 2, 3, 0, 1, 2], np.uint16)
    path = tmp_path / "ok.npz"
    np.savez_compressed(path, x_train=x, y_train=y, x_val=xv, y_val=yv)
    data = datasets.load_npz(path, "ok")
    assert np.array_equal(data.x_train, x.astype(np.float32) / 255.0)
    assert np.array_equal(data.y_train, y[:, 0].astype(np.int64))
    assert np.array_equal(data.x_val, xv.astype(np.float32))
    assert data.y_val.tolist() == yv.tolist() and data.num_classes == int(y.max()) + 1
    summary = check_npz(path, max_decompressed_bytes=None)
    assert (summary.input_shape, summary.num_classes) == (data.input_shape, data.num_classes)
    assert (summary.train_samples, summary.val_samples) == (40, 7)


def test_both_readers_agree_on_float_targets(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.asfortranarray(rng.normal(size=(40, 3)).astype(">f8"))  # big-endian, Fortran
    path = tmp_path / "targets.npz"
    np.savez_compressed(path, x_train=rng.random((40, 2)), y_train=y)
    data = datasets.load_npz(path, "targets")
    assert data.y_train.dtype == np.float32 and len(data.y_train) + len(data.y_val) == 40
    assert np.array_equal(np.sort(np.concatenate([data.y_train, data.y_val]), axis=0),
                          np.sort(y.astype(np.float32), axis=0))
    assert check_npz(path, max_decompressed_bytes=None).head == data.head


def test_inputs_that_grow_past_the_budget_as_float32_are_refused(tmp_path: Path) -> None:
    """1000 bytes of uint8 images take 4000 bytes as the float32 a worker trains on (4800
    with the int64 labels): the budget counts what training holds, not only the 1800 bytes
    the file declares."""
    path = tmp_path / "grow.npz"
    x = np.zeros((100, 10), np.uint8)
    y = np.tile(np.arange(2, dtype=np.int64), 50)
    np.savez(path, x_train=x, y_train=y)
    assert check_npz(path, max_decompressed_bytes=10_000).train_samples == 80
    with pytest.raises(DatasetTooLarge, match="take 4800 bytes once converted for training"):
        check_npz(path, max_decompressed_bytes=4_500)
    # Float targets are held as float32: 4000 + 100 x 4 bytes, whatever their stored dtype.
    np.savez(path, x_train=x, y_train=np.linspace(0, 1, 100))
    assert check_npz(path, max_decompressed_bytes=4_800).head.kind == "targets"
    with pytest.raises(DatasetTooLarge, match="take 4400 bytes once converted for training"):
        check_npz(path, max_decompressed_bytes=4_399)


def test_a_file_registered_with_class_ids_keeps_its_whole_float_labels_as_classes(
        tmp_path: Path) -> None:
    """Uploaded before float labels meant float targets: the service registered it as class
    ids, and the worker loads it so (task="classes"), not as regression targets."""
    from lrsearch.datasets.uploaded import load_npz

    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = np.tile(np.arange(4.0), 10)  # whole floats
    np.savez(tmp_path / "old.npz", x_train=x, y_train=y)
    assert load_npz(tmp_path / "old.npz", "old").head.kind == "targets"
    old = load_npz(tmp_path / "old.npz", "old", task="classes")
    assert old.head.kind == "classes" and old.head.units == 4
    assert old.y_train.dtype == np.int64
    np.savez(tmp_path / "real.npz", x_train=x, y_train=y + 0.5)
    with pytest.raises(DatasetError, match="registered with class ids"):
        load_npz(tmp_path / "real.npz", "real", task="classes")
