"""User datasets uploaded as .npz files: validated before use, never unpickled.

A file holds `x_train`, `y_train` and optionally both `x_val` and `y_val`. Rules: no other
members (each exactly `<key>.npy`, once, stored or deflated); x numeric (booleans, integers or
floats; uint8 images are scaled to [0, 1]), at least 2-D, finite. The dtype of `y_train` says
the task:

- an integer or bool dtype: class ids. Shape (n,) or (n, 1), whole ids >= 0, at least 2
  classes; loaded as int64 of shape (n,); the head is a softmax over max(y_train) + 1 classes.
- a float dtype: float targets (regression). Shape (n,) or (n, k) with 1 <= k <= MAX_TARGETS,
  every value finite and within float32's range; loaded as float32 keeping its shape; the
  head is linear with k outputs (1 for shape (n,)). Whole-number floats are targets too:
  class ids must be stored with an integer dtype.

Validation arrays are shaped like the training ones; `y_val` has the same task as `y_train`
(class ids: only classes `y_train` has; targets: the same shape per sample).
Uploaded datasets live in `<data_dir>/uploads/<name>.npz`.

Hostile files are refused before anything is allocated: the zip directory and the `.npy`
headers are checked first (`lrsearch.datasets.npz`), the declared decompressed size can be
bounded (and what training holds counted against the same bound: inputs and targets as
float32, class ids as int64), and the values are then checked while streaming. `check_npz`
never holds more than one chunk of an array (what a server uses to accept an upload);
`load_npz` builds the arrays for training, through the same checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import socket
import struct
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from lrsearch.datasets.base import Dataset, holdout_size, split
from lrsearch.datasets.npz import Archive, DatasetTooLarge, Member
from lrsearch.datasets.references import Listing, Npy, Registered, val_mask
from lrsearch.errors import DatasetError
from lrsearch.models import MAX_TARGETS, Head

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
    head: Head
    train_samples: int
    val_samples: int
    decompressed_bytes: int

    @property
    def num_classes(self) -> int | None:
        return self.head.num_classes


def is_targets(member: Member) -> bool:
    """A `y` array of a float dtype holds float targets; integers and bools hold class ids."""
    return member.dtype.kind == "f"


def _check_labels_shape(yk: str, n: int, y: Member) -> None:
    """One class id a sample, or a vector of at most MAX_TARGETS float targets a sample."""
    shape = y.shape
    if not is_targets(y):
        if shape not in ((n,), (n, 1)):
            raise DatasetError(f"`{yk}` must hold one class id per sample ({n}). Received "
                               f"shape {shape}", field=yk)
        return
    if not (shape == (n,) or (len(shape) == 2 and shape[0] == n and shape[1] >= 1)):
        raise DatasetError(f"`{yk}` holds floats, so float targets: it must have shape ({n},) "
                           f"or ({n}, k), one row per sample. Received shape {shape}", field=yk)
    if len(shape) == 2 and shape[1] > MAX_TARGETS:
        raise DatasetError(f"`{yk}` must hold at most {MAX_TARGETS} targets per sample. "
                           f"Received shape {shape}", field=yk)


def _check_same_task(members: dict[str, Member]) -> None:
    """`y_val` holds what `y_train` holds: class ids, or targets of the same shape a sample."""
    if "y_val" not in members:
        return
    train, val = members["y_train"], members["y_val"]
    if is_targets(train) != is_targets(val):
        task = "float targets (a float dtype)" if is_targets(train) else \
            "class ids (an integer or bool dtype)"
        raise DatasetError(f"`y_val` must hold {task} like `y_train`. Received dtype "
                           f"{val.dtype}, `y_train` dtype {train.dtype}", field="y_val")
    if is_targets(train) and train.shape[1:] != val.shape[1:]:
        raise DatasetError(f"`y_val` targets have shape {val.shape[1:]} per sample, `y_train` "
                           f"targets {train.shape[1:]}", field="y_val")


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
        x = members[xk].shape
        if len(x) < 2 or x[0] < 1:
            raise DatasetError(f"`{xk}` must have shape (samples, features...). Received "
                               f"shape {x}", field=xk)
        _check_labels_shape(yk, x[0], members[yk])
    train = members["x_train"].shape
    if train[0] < 2:
        raise DatasetError("`x_train` needs at least 2 samples", field="x_train")
    if "x_val" in members and members["x_val"].shape[1:] != train[1:]:
        raise DatasetError(f"`x_val` samples have shape {members['x_val'].shape[1:]}, "
                           f"`x_train` samples {train[1:]}", field="x_val")
    _check_same_task(members)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_chunk(key: str, chunk: np.ndarray) -> None:
    """The element rules: floats (inputs, targets) finite and within float32's range, which
    they are converted to; bools 0 or 1; class ids (integer or bool labels) >= 0."""
    if chunk.dtype.kind == "f":
        if not np.isfinite(chunk).all():
            raise DatasetError(f"`{key}` contains NaN or infinite values", field=key)
        if chunk.size and np.abs(chunk).max() > FLOAT32_MAX:
            raise DatasetError(f"`{key}` holds values beyond float32's range (magnitude "
                               f"{np.abs(chunk).max().item():g} > {FLOAT32_MAX:g})", field=key)
        return
    if chunk.dtype.kind == "b" and chunk.size and chunk.view(np.uint8).max() > 1:
        raise DatasetError(f"`{key}` holds a bool stored as byte "
                           f"{chunk.view(np.uint8).max()}, not 0 or 1", field=key)
    if key.startswith("y_") and chunk.size and chunk.min() < 0:
        raise DatasetError(f"`{key}` holds a negative class id {chunk.min()}", field=key)


def _read(archive: Archive, key: str, keep: bool
          ) -> tuple[np.ndarray | None, tuple[float, float]]:
    """Stream one member through the element rules; returns the whole array when `keep`
    (else None: one chunk at a time is held) and the smallest and largest class id (class
    ids; (inf, -inf) otherwise)."""
    m = archive.members[key]
    out = np.empty(m.shape, m.dtype, order="F" if m.fortran_order else "C") if keep else None
    flat = None if out is None else out.ravel(order="K")  # a view, in storage order
    ids = key.startswith("y_") and not is_targets(m)
    low, high, done = math.inf, -math.inf, 0
    for chunk in archive.chunks(key):
        _check_chunk(key, chunk)
        if ids and chunk.size:
            low, high = min(low, chunk.min().item()), max(high, chunk.max().item())
        if flat is not None:
            flat[done:done + chunk.size] = chunk
        done += chunk.size
    return out, (low, high)


def _check_training_bytes(members: dict[str, Member], max_bytes: int | None) -> None:
    """What a worker holds to train on it, inputs and float targets as float32 and class ids
    as int64, within the same budget as the decompressed bytes: 2 GB of uint8 images would
    otherwise be accepted and then cost every trial's child 8 GB."""
    if max_bytes is None:
        return
    total = sum(math.prod(m.shape) * (8 if key.startswith("y_") and not is_targets(m) else 4)
                for key, m in members.items())
    if total > max_bytes:
        raise DatasetTooLarge(
            f"The arrays take {total} bytes once converted for training (inputs and float "
            f"targets as float32, class ids as int64), more than "
            f"max_decompressed_bytes={max_bytes}.", field="file")


def _head(members: dict[str, Member], labels: dict[str, tuple[float, float]]) -> Head:
    """Float targets: a linear head of the targets' shape per sample. Class ids: a softmax
    over the classes of `y_train`, which must be at least 2 and include those of `y_val`."""
    if is_targets(members["y_train"]):
        return Head.targets(members["y_train"].shape[1:])
    low, high = labels["y_train"]
    if low == high:  # whole ids >= 0: two distinct ones exactly when min != max
        raise DatasetError("`y_train` must hold at least 2 classes", field="y_train")
    num_classes = int(high) + 1
    if "y_val" in labels and labels["y_val"][1] >= num_classes:
        raise DatasetError(f"`y_val` holds class {int(labels['y_val'][1])}, unknown to "
                           f"`y_train` (0..{num_classes - 1})", field="y_val")
    return Head.classes(num_classes)


def _validate(path: Path, keep: bool, max_decompressed_bytes: int | None
              ) -> tuple[dict[str, Member], dict[str, np.ndarray], Head]:
    """Every rule, headers before values; (members, the arrays when `keep`, the head)."""
    with Archive(path, KEY_ORDER, max_decompressed_bytes) as archive:
        members = {k: archive.members[k] for k in KEY_ORDER if k in archive.members}
        _check_shapes(members)
        _check_training_bytes(members, max_decompressed_bytes)
        arrays, labels = {}, {}
        for key in members:
            array, labels[key] = _read(archive, key, keep)
            if array is not None:
                arrays[key] = array
    return members, arrays, _head(members, labels)


def check_npz(path: Path, *, max_decompressed_bytes: int | None) -> UploadSummary:
    """Validate an uploaded .npz by every rule of `load_npz` without loading it: the zip
    directory and headers first (nothing allocated; DatasetTooLarge when the arrays declare
    more than `max_decompressed_bytes` together), then the values streamed a chunk at a
    time, so memory stays bounded by one chunk whatever the file declares or holds. Raises
    DatasetError naming the array at fault."""
    members, _, head = _validate(path, False, max_decompressed_bytes)
    n = members["x_train"].shape[0]
    val = members["x_val"].shape[0] if "x_val" in members else holdout_size(n, VAL_FRACTION)
    return UploadSummary(input_shape=members["x_train"].shape[1:], head=head,
                         train_samples=n if "x_val" in members else n - val, val_samples=val,
                         decompressed_bytes=sum(m.info.file_size for m in members.values()))


def as_inputs(x: np.ndarray) -> np.ndarray:
    """Inputs as training reads them: uint8 scaled to [0, 1], anything else float32 (a whole
    array, or a batch of rows of a memory-mapped one)."""
    return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)


def as_labels(y: np.ndarray, head: Head) -> np.ndarray:
    """Class ids as int64 of shape (n,); float targets as float32, shape kept."""
    if head.kind == "targets":
        return y.astype(np.float32)
    return y.reshape(-1).astype(np.int64)


def _registered_as_classes(arrays: dict[str, np.ndarray]) -> Head:
    """The head of a file uploaded before float labels meant float targets, when the service
    registered it as class ids: its float labels must be whole class ids >= 0, one a
    sample, and the validation labels ones the training set knows."""
    labels = [(k, arrays[k]) for k in ("y_train", "y_val") if k in arrays]
    for key, y in labels:
        whole = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)
        if not whole or y.size == 0 or np.any(y < 0) or np.any(y != np.round(y)):
            raise DatasetError(f"Dataset was registered with class ids, but `{key}` holds "
                               "float targets; upload it again", field=key)
    num_classes = int(arrays["y_train"].max()) + 1
    if "y_val" in arrays and int(arrays["y_val"].max()) >= num_classes:
        raise DatasetError("`y_val` holds a class id `y_train` does not have", field="y_val")
    return Head.classes(num_classes)


def load_npz(path: Path, name: str, *, max_decompressed_bytes: int | None = None,
             task: str | None = None) -> Dataset:
    """Read and validate an uploaded .npz (raises DatasetError naming the array at fault):
    the checks of `check_npz`, keeping the arrays. Without validation arrays, VAL_FRACTION of
    the training samples is held out (seed 0). `task` is what the service registered it as:
    "classes" keeps a file with whole float labels (uploaded before float labels meant float
    targets) a class-id dataset."""
    _, arrays, head = _validate(path, True, max_decompressed_bytes)
    if task == "classes" and head.kind == "targets":
        head = _registered_as_classes(arrays)
    x, y = as_inputs(arrays["x_train"]), as_labels(arrays["y_train"], head)
    if "x_val" not in arrays:
        return Dataset(name, *split(x, y, VAL_FRACTION, 0), head)
    return Dataset(name, x, y, as_inputs(arrays["x_val"]), as_labels(arrays["y_val"], head),
                   head)


@dataclass(frozen=True)
class MappedNpz:
    """An uploaded .npz opened for streaming (`open_npz`): (x, y, rows) per side, x and y
    memory-mapped in their stored dtype, `rows` the indices of the side's samples."""

    train: tuple[np.ndarray, np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray, np.ndarray]
    head: Head
    input_shape: tuple[int, ...]


# A zip local file header: signature, then fixed fields; the name and extra lengths are at
# bytes 26 and 28, and the member's data follows the name and the extra field.
_LOCAL_HEADER = struct.Struct("<4s22xHH")


def _data_offset(path: Path, member: Member) -> int:
    """Where a stored (uncompressed) member's array data starts in the file."""
    with open(path, "rb") as f:
        f.seek(member.info.header_offset)
        raw = f.read(_LOCAL_HEADER.size)
        if len(raw) < _LOCAL_HEADER.size:
            raise DatasetError(f"`{member.key}`'s zip entry is cut short", field=member.key)
        signature, name_len, extra_len = _LOCAL_HEADER.unpack(raw)
        if signature != b"PK\x03\x04":
            raise DatasetError(f"`{member.key}`'s zip entry is corrupt", field=member.key)
    return member.info.header_offset + _LOCAL_HEADER.size + name_len + extra_len \
        + member.header_bytes


STALE_PART_SECONDS = 3600.0  # a part file this old was left by a child that was killed


def _inflate(archive: Archive, m: Member, cache: Path, target: Path) -> None:
    """Write a deflated member as `target` (.npy): to a part file of this host and process
    alone, with ordinary writes (a full disk is an OSError, not a fault in a mapped page),
    synced, then renamed over `target` at once, so a reader maps a whole file or none."""
    cache.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in cache.glob(".*.part"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > STALE_PART_SECONDS:
                old.unlink()
    fd, part = tempfile.mkstemp(prefix=f".{m.key}.{socket.gethostname()}.", suffix=".part",
                                dir=cache)
    try:
        with os.fdopen(fd, "wb") as out:
            npy.write_array_header_2_0(out, {"descr": npy.dtype_to_descr(m.dtype),
                                             "fortran_order": m.fortran_order,
                                             "shape": m.shape})
            for chunk in archive.chunks(m.key):
                out.write(chunk.tobytes())
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise


def _mapped(path: Path, archive: Archive, key: str, cache: Path) -> np.ndarray:
    """A member as a read-only memory map: in place when stored uncompressed (what
    numpy.savez writes); a deflated one (savez_compressed) is inflated once, a chunk at a
    time, into `cache/<key>.npy` and mapped from there."""
    m = archive.members[key]
    if m.info.compress_type == zipfile.ZIP_STORED:
        return np.memmap(path, dtype=m.dtype, mode="r", offset=_data_offset(path, m),
                         shape=m.shape, order="F" if m.fortran_order else "C")
    target = cache / f"{key}.npy"
    if not target.exists():
        _inflate(archive, m, cache, target)
    return np.load(target, mmap_mode="r", allow_pickle=False)


def inflated_prefix(data_dir: Path, path: Path) -> Path:
    """Where `open_npz` keeps the inflated members of the upload at `path`: folders
    `<prefix>.<size>.<mtime>`; deleting the upload removes them (service/datasets)."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    return data_dir / "cache" / "npz" / key


def open_npz(path: Path, *, task: str | None = None, data_dir: Path | None = None
             ) -> MappedNpz:
    """An uploaded .npz for streaming, validated by every rule of `load_npz` with bounded
    memory (`check_npz`'s pass), its arrays memory-mapped instead of loaded. The validation
    split is `load_npz`'s (VAL_FRACTION held out with seed 0) as row indices. Deflated members
    are inflated once under `data_dir` (by default the file's folder; `inflated_prefix`),
    keyed by the file's size and modification time."""
    members, _, head = _validate(path, False, None)
    stat = path.stat()
    prefix = inflated_prefix(data_dir or path.parent, path)
    cache = prefix.with_name(f"{prefix.name}.{stat.st_size}.{stat.st_mtime_ns}")
    with Archive(path, KEY_ORDER, None) as archive:
        arrays = {key: _mapped(path, archive, key, cache) for key in members}
    if task == "classes" and head.kind == "targets":
        head = _registered_as_classes({k: np.asarray(v) for k, v in arrays.items()
                                       if k.startswith("y_")})
    x, y = arrays["x_train"], arrays["y_train"]
    n = len(x)
    if "x_val" not in arrays:
        order = np.random.default_rng(0).permutation(n)
        n_val = holdout_size(n, VAL_FRACTION)
        return MappedNpz((x, y, order[n_val:]), (x, y, order[:n_val]), head,
                         tuple(x.shape[1:]))
    xv, yv = arrays["x_val"], arrays["y_val"]
    return MappedNpz((x, y, np.arange(n)), (xv, yv, np.arange(len(xv))), head,
                     tuple(x.shape[1:]))


def mapped_npy(source: Npy, listing: Listing, registered: Registered) -> MappedNpz:
    """A registered `.npy` reference's x.npy and y.npy, memory-mapped (never unpickled), as
    the sides training reads: the split rule's rows, or the validation folder's arrays."""
    x, y = (np.load(f.path, mmap_mode="r", allow_pickle=False) for f in listing.train)
    shape = tuple(registered.input_shape)
    if source.validation_uri is None:
        mask = val_mask(len(x), source.val_fraction)
        return MappedNpz((x, y, np.flatnonzero(~mask)), (x, y, np.flatnonzero(mask)),
                         registered.head, shape)
    xv, yv = (np.load(f.path, mmap_mode="r", allow_pickle=False) for f in listing.val)
    return MappedNpz((x, y, np.arange(len(x))), (xv, yv, np.arange(len(xv))),
                     registered.head, shape)

