"""User datasets uploaded as .npz files: validated before use, never unpickled.

A file holds `x_train`, `y_train` and optionally both `x_val` and `y_val`. Rules: no other
members (each exactly `<key>.npy`, once, stored or deflated); x numeric (uint8 images are
scaled to [0, 1]), at least 2-D, finite; y whole class ids >= 0, one per sample, at least 2
classes; validation arrays shaped like the training ones with labels the training set knows.
Uploaded datasets live in `<data_dir>/uploads/<name>.npz`.

Hostile files are refused before anything is allocated: the zip directory and the `.npy`
headers are checked first (`lrsearch.datasets.npz`), the declared decompressed size can be
bounded, and the values are then checked while streaming. `check_npz` never holds more than
one chunk of an array (what a server uses to accept an upload); `load_npz` builds the arrays
for training, through the same checks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrsearch.datasets.base import Dataset, holdout_size, split
from lrsearch.datasets.npz import Archive, DatasetTooLarge, Member
from lrsearch.errors import DatasetError

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# The arrays a file may hold, in the order they are checked (a missing x_train comes first).
KEY_ORDER = ("x_train", "y_train", "x_val", "y_val")


def check_name(name: str) -> str:
    """Dataset names are plain identifiers: no path separators, no dots, at most 64 chars."""
    if not isinstance(name, str) or not NAME.match(name):
        raise DatasetError(
            "Argument `name` must be 1-64 lowercase letters, digits, '_' or '-', starting with "
            f"a letter or digit. Received: name={name!r}", field="name")
    return name


def upload_path(data_dir: Path, name: str) -> Path:
    return data_dir / "uploads" / f"{check_name(name)}.npz"


PAIRS = (("x_train", "y_train"), ("x_val", "y_val"))
VAL_FRACTION = 0.2  # held out of x_train when the file has no validation arrays


@dataclass(frozen=True)
class UploadSummary:
    """What a valid .npz holds, as `check_npz` finds it without loading the arrays."""

    input_shape: tuple[int, ...]
    num_classes: int
    train_samples: int
    val_samples: int
    decompressed_bytes: int


def _check_shapes(members: dict[str, Member]) -> None:
    """The rules that need only the headers: which arrays, their shapes, one label each."""
    for key in ("x_train", "y_train"):
        if key not in members:
            raise DatasetError(f"The file has no `{key}` array", field=key)
    if ("x_val" in members) != ("y_val" in members):
        raise DatasetError("Give both `x_val` and `y_val`, or neither", field="x_val")
    for xk, yk in PAIRS:
        if xk not in members:
            continue
        x, y = members[xk].shape, members[yk].shape
        if len(x) < 2 or x[0] < 1:
            raise DatasetError(f"`{xk}` must have shape (samples, features...). Received "
                               f"shape {x}", field=xk)
        if y not in ((x[0],), (x[0], 1)):
            raise DatasetError(f"`{yk}` must hold one class id per sample ({x[0]}). Received "
                               f"shape {y}", field=yk)
    train = members["x_train"].shape
    if train[0] < 2:
        raise DatasetError("`x_train` needs at least 2 samples", field="x_train")
    if "x_val" in members and members["x_val"].shape[1:] != train[1:]:
        raise DatasetError(f"`x_val` samples have shape {members['x_val'].shape[1:]}, "
                           f"`x_train` samples {train[1:]}", field="x_val")


def _check_chunk(key: str, chunk: np.ndarray) -> None:
    """The element rules: inputs finite; labels finite, whole and >= 0."""
    labels = key.startswith("y_")
    if chunk.dtype.kind == "f":
        if not np.isfinite(chunk).all():
            raise DatasetError(f"`{key}` must hold whole class ids" if labels else
                               f"`{key}` contains NaN or infinite values", field=key)
        if labels and np.any(chunk != np.round(chunk)):
            raise DatasetError(f"`{key}` must hold whole class ids", field=key)
    if labels and chunk.size and chunk.min() < 0:
        raise DatasetError(f"`{key}` holds a negative class id {chunk.min()}", field=key)


def _read(archive: Archive, key: str, keep: bool
          ) -> tuple[np.ndarray | None, tuple[float, float]]:
    """Stream one member through the element rules; returns the whole array when `keep`
    (else None: one chunk at a time is held) and the smallest and largest label (labels)."""
    m = archive.members[key]
    out = np.empty(m.shape, m.dtype, order="F" if m.fortran_order else "C") if keep else None
    flat = None if out is None else out.ravel(order="K")  # a view, in storage order
    low, high, done = math.inf, -math.inf, 0
    for chunk in archive.chunks(key):
        _check_chunk(key, chunk)
        if key.startswith("y_") and chunk.size:
            low, high = min(low, chunk.min().item()), max(high, chunk.max().item())
        if flat is not None:
            flat[done:done + chunk.size] = chunk
        done += chunk.size
    return out, (low, high)


def _check_training_bytes(members: dict[str, Member], max_bytes: int | None) -> None:
    """What a worker holds to train on it, inputs as float32 and labels as int64, within the
    same budget as the decompressed bytes: 2 GB of uint8 images would otherwise be accepted
    and then cost every trial's child 8 GB."""
    if max_bytes is None:
        return
    total = sum(math.prod(m.shape) * (4 if key.startswith("x_") else 8)
                for key, m in members.items())
    if total > max_bytes:
        raise DatasetTooLarge(
            f"The arrays take {total} bytes once converted for training (inputs as float32, "
            f"labels as int64), more than max_decompressed_bytes={max_bytes}.", field="file")


def _validate(path: Path, keep: bool, max_decompressed_bytes: int | None
              ) -> tuple[dict[str, Member], dict[str, np.ndarray], int]:
    """Every rule, headers before values; (members, the arrays when `keep`, classes)."""
    with Archive(path, KEY_ORDER, max_decompressed_bytes) as archive:
        members = {k: archive.members[k] for k in KEY_ORDER if k in archive.members}
        _check_shapes(members)
        _check_training_bytes(members, max_decompressed_bytes)
        arrays, labels = {}, {}
        for key in members:
            array, labels[key] = _read(archive, key, keep)
            if array is not None:
                arrays[key] = array
    low, high = labels["y_train"]
    if low == high:  # whole ids >= 0: two distinct ones exactly when min != max
        raise DatasetError("`y_train` must hold at least 2 classes", field="y_train")
    num_classes = int(high) + 1
    if "y_val" in labels and labels["y_val"][1] >= num_classes:
        raise DatasetError(f"`y_val` holds class {int(labels['y_val'][1])}, unknown to "
                           f"`y_train` (0..{num_classes - 1})", field="y_val")
    return members, arrays, num_classes


def check_npz(path: Path, *, max_decompressed_bytes: int | None) -> UploadSummary:
    """Validate an uploaded .npz by every rule of `load_npz` without loading it: the zip
    directory and headers first (nothing allocated; DatasetTooLarge when the arrays declare
    more than `max_decompressed_bytes` together), then the values streamed a chunk at a
    time, so memory stays bounded by one chunk whatever the file declares or holds. Raises
    DatasetError naming the array at fault."""
    members, _, num_classes = _validate(path, False, max_decompressed_bytes)
    n = members["x_train"].shape[0]
    val = members["x_val"].shape[0] if "x_val" in members else holdout_size(n, VAL_FRACTION)
    return UploadSummary(input_shape=members["x_train"].shape[1:], num_classes=num_classes,
                         train_samples=n if "x_val" in members else n - val, val_samples=val,
                         decompressed_bytes=sum(m.info.file_size for m in members.values()))


def _inputs(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)


def load_npz(path: Path, name: str, *, max_decompressed_bytes: int | None = None) -> Dataset:
    """Read and validate an uploaded .npz (raises DatasetError naming the array at fault):
    the checks of `check_npz`, keeping the arrays. Without validation arrays, VAL_FRACTION of
    the training samples is held out (seed 0)."""
    _, arrays, num_classes = _validate(path, True, max_decompressed_bytes)
    x = _inputs(arrays["x_train"])
    y = arrays["y_train"].reshape(-1).astype(np.int64)
    if "x_val" not in arrays:
        return Dataset(name, *split(x, y, VAL_FRACTION, 0), num_classes=num_classes)
    return Dataset(name, x, y, _inputs(arrays["x_val"]),
                   arrays["y_val"].reshape(-1).astype(np.int64), num_classes=num_classes)
