"""Registering a data reference: read every file once, check it, and describe what it holds.

`register(source, roots)` lists the files (refusing anything outside the roots), takes the
fingerprint of that listing before reading, then streams through everything: every image is
decoded with the decoder training uses, every CSV row and TFRecord example parsed as training
parses it, every npy value checked against the rules of .npz uploads. Memory stays bounded
by one batch or chunk whatever the dataset's size. What is wrong raises DatasetError naming
the file (relative to its uri), the row or record where there is one, and what to do.

TensorFlow is imported inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from lrsearch.datasets.references import (
    Csv,
    CsvColumns,
    FileEntry,
    ImageFolder,
    KerasDataset,
    Listing,
    Npy,
    Registered,
    Source,
    TFRecord,
    check_source,
    csv_columns,
    list_files,
    listing_fingerprint,
    read_header,
    val_count,
)
from lrsearch.errors import DatasetError
from lrsearch.models import MAX_TARGETS, Head

# Class ids beyond this are refused: a head of more classes is no dataset's (and CSV class
# ids, read as float64, stay exact far beyond it).
MAX_CLASSES = 1_000_000
BATCH = 1024  # images, rows or records read at a time
NPY_CHUNK_BYTES = 4 << 20
NPY_MAX_HEADER_BYTES = 10_000
FLOAT32_MAX = float(np.finfo(np.float32).max)

__all__ = ["MAX_CLASSES", "register"]


def register(source: Source, roots: Sequence[str]) -> Registered:
    """Read the data reference `source` once and return what it holds (see the module
    docstring). Image folders, CSV, TFRecord and npy sources only: a Keras dataset raises
    DatasetError (it is downloaded, not registered from files)."""
    if isinstance(source, KerasDataset):
        raise DatasetError(f"A Keras dataset ({source.dataset}) is downloaded, not registered "
                           "from files", field="source.kind")
    checked = check_source(source, roots, deep=True)
    assert not isinstance(checked, KerasDataset)
    listing = list_files(checked, roots)
    fingerprint = listing_fingerprint(listing)  # before reading: a change during it shows
    if isinstance(checked, ImageFolder):
        return _images(checked, listing, fingerprint)
    if isinstance(checked, Csv):
        return _csv(checked, listing, fingerprint)
    if isinstance(checked, TFRecord):
        return _tfrecord(checked, listing, fingerprint)
    return _npy(checked, listing, fingerprint)


def _counts(source: Csv | TFRecord | ImageFolder | Npy, n_train_side: int, n_val_side: int
            ) -> tuple[int, int]:
    """(training, validation) examples: the split rule's counts without a validation_uri,
    else both sides whole (each must hold at least one)."""
    if source.validation_uri is None:
        held = val_count(n_train_side, source.val_fraction)
        return n_train_side - held, held
    if n_train_side < 1:
        raise DatasetError("`source.uri` holds no examples", field="source.uri")
    if n_val_side < 1:
        raise DatasetError("`source.validation_uri` holds no examples",
                           field="source.validation_uri")
    return n_train_side, n_val_side


def _reason(error: Exception) -> str:
    """A TensorFlow error's message without its op and function names: its first line."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[\[.*", "", text, flags=re.S)
    text = re.sub(r"\s*\[Op:[^\]]*\].*", "", text, flags=re.S)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def _field(side: str) -> str:
    return "source.uri" if side == "train" else "source.validation_uri"


# --- image folders -----------------------------------------------------------------------


def _images(source: ImageFolder, listing: Listing, fingerprint: str) -> Registered:
    classes = listing.classes
    if len(classes) < 2:
        raise DatasetError(f"An image folder needs at least 2 class subfolders (one per class, "
                           f"holding its images). `source.uri` has {len(classes)}"
                           f"{': ' + ', '.join(classes) if classes else ''}", field="source.uri")
    labels = np.array([f.label or 0 for f in listing.train], np.int64)
    counts = np.bincount(labels, minlength=len(classes))
    empty = [name for name, count in zip(classes, counts, strict=True) if count == 0]
    if empty:
        raise DatasetError(f"Every class needs at least 1 image (.png, .jpg, .jpeg, .bmp or "
                           f".gif); these class folders have none: {', '.join(empty)}",
                           field="source.uri")
    train, val = _counts(source, len(listing.train), len(listing.val))
    for side, files in (("train", listing.train), ("val", listing.val)):
        _decode_all(source, files, _field(side))
    head = Head.classes(len(classes))
    shape = (*source.image_size, source.channels)
    return Registered.of(train, val, shape, head, fingerprint, classes)


def _decode_all(source: ImageFolder, files: Sequence[FileEntry], field: str) -> None:
    """Decode every image as training will; an unreadable one raises, named. A worker whose
    Keras backend is not TensorFlow decodes them as it trains on them, with Pillow
    (lrsearch.datasets.portable), and needs no TensorFlow."""
    if not files:
        return
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        from lrsearch.datasets.portable import read_image

        for f in files:
            try:
                read_image(f.path, source.image_size, source.channels)
            except DatasetError as bad:
                # its message names the file by its full path: by the uri's relative one here
                reason = str(bad).replace(f"`{f.path}`", "it").replace(f.path, f.rel)
                raise DatasetError(f"`{f.rel}` ({field}) cannot be read as an image: "
                                   f"{reason}. Replace or remove it", field=field) from None
        return
    import tensorflow as tf

    from lrsearch.datasets.streams import load_image

    size, channels = source.image_size, source.channels

    def check(path: tf.Tensor) -> tf.Tensor:
        # A value of the pixels, so the decode cannot be optimised away.
        return tf.reduce_sum(load_image(path, size, channels))

    paths = np.array([os.fsencode(f.path) for f in files], dtype=object)
    ds = (tf.data.Dataset.from_tensor_slices(paths)
          .map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .batch(BATCH))
    done = 0
    try:
        for batch in ds.as_numpy_iterator():
            done += len(batch)
    except tf.errors.OpError as e:
        for f in files[done:done + BATCH]:  # find the image at fault, one by one
            try:
                load_image(tf.constant(os.fsencode(f.path)), size, channels)
            except tf.errors.OpError as bad:
                raise DatasetError(f"`{f.rel}` ({field}) cannot be read as an image: "
                                   f"{_reason(bad)}. Replace or remove it",
                                   field=field) from None
        raise DatasetError(f"An image among `{files[done].rel}` and the {BATCH - 1} after it "
                           f"({field}) cannot be read: {_reason(e)}", field=field) from None


# --- rows: CSV and TFRecord --------------------------------------------------------------


@dataclass
class _Labels:
    """What the labels of one side hold: the smallest and largest class id seen, and how
    many rows."""

    low: float = math.inf
    high: float = -math.inf
    rows: int = 0

    def add(self, ids: np.ndarray) -> None:
        if ids.size:
            self.low = min(self.low, float(ids.min()))
            self.high = max(self.high, float(ids.max()))
        self.rows += len(ids)


@dataclass
class _Scan:
    """Rows read so far, and the class ids of the training and validation rows."""

    split: float | None  # val_fraction when the split rule applies
    index: int = 0  # rows read on the uri side (the split rule's element index)
    sides: dict[str, _Labels] = field(default_factory=lambda: {"train": _Labels(),
                                                               "val": _Labels()})


def _first_bad_row(bad: np.ndarray) -> int:
    """The first row of a [rows, ...] boolean array with a True in it."""
    return int(np.argmax(bad.reshape(len(bad), -1).any(axis=1)))


def _check_batch(scan: _Scan, side: str, x: np.ndarray, y: np.ndarray, task: str,
                 where: Callable[[int], str], field: str, inputs: str, target: str) -> None:
    """The element rules on one batch of rows (`where(k)` names its row k): inputs finite;
    float targets finite; class ids whole numbers in 0..MAX_CLASSES-1, gathered per side
    (the split rule applied on the uri side when `scan.split` is set)."""
    if x.size and not np.isfinite(x).all():
        raise DatasetError(f"{where(_first_bad_row(~np.isfinite(x)))}: {inputs} holds NaN or "
                           "infinite values (or numbers beyond float32's range)", field=field)
    if task == "targets":
        if y.size and not np.isfinite(y).all():
            raise DatasetError(f"{where(_first_bad_row(~np.isfinite(y)))}: {target} holds NaN "
                               "or infinite values (or numbers beyond float32's range)",
                               field=field)
        if side == "val":
            scan.sides["val"].rows += len(y)
    else:
        ids = y.reshape(len(y)).astype(np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(ids) | (ids < 0) | (ids != np.floor(ids)) | (ids >= MAX_CLASSES)
        if bad.any():
            row = int(np.argmax(bad))
            raise DatasetError(f"{where(row)}: class id {ids[row].item()!r} in {target} is not a "
                               f"whole number in 0..{MAX_CLASSES - 1}; class ids are whole "
                               "numbers from 0 (or use task='targets' for float targets)",
                               field=field)
        if side == "train" and scan.split is not None:
            index = np.arange(scan.index, scan.index + len(ids), dtype=np.float64)
            held = np.floor((index + 1) * scan.split) > np.floor(index * scan.split)
            scan.sides["val"].add(ids[held])
            scan.sides["train"].add(ids[~held])
        else:
            scan.sides[side].add(ids)
    if side == "train":
        scan.index += len(y)


def _head_of(scan: _Scan, task: str, target_shape: tuple[int, ...], target: str) -> Head:
    """Targets: a linear head. Class ids: num_classes = the largest training id + 1, at least
    2 distinct training ids, validation ids among them."""
    if task == "targets":
        return Head.targets(target_shape)
    train, val = scan.sides["train"], scan.sides["val"]
    if not train.rows or train.low == train.high:
        raise DatasetError(f"The training examples must hold at least 2 classes in `{target}`. "
                           f"Received: only class {train.low:g}" if train.rows else
                           "There are no training examples", field="source.target")
    num_classes = int(train.high) + 1
    if val.rows and val.high >= num_classes:
        raise DatasetError(f"The validation examples hold class {int(val.high)} in `{target}`, "
                           f"which no training example has (classes 0..{num_classes - 1}); "
                           "every validation class must also be a training class",
                           field="source.target")
    return Head.classes(num_classes)


def _scan_file(entry: FileEntry, field: str, make: Callable[[Any], Any],
               convert: Callable[..., tuple[Any, Any]],
               on_batch: Callable[[np.ndarray, np.ndarray, int], None],
               unit: str, first_row: int) -> None:
    """Read one file's rows through `make([path])` (a tf.data.Dataset of rows), converting
    batches with `convert`; `on_batch(x, y, position)` checks each. A row TensorFlow cannot
    parse is found exactly by reading its batch again row by row."""
    import tensorflow as tf

    path = os.fsencode(entry.path)  # bytes: a file name need not be valid UTF-8
    ds = make([path]).batch(BATCH).map(convert)
    done = 0
    try:
        for x, y in ds.as_numpy_iterator():
            on_batch(x, y, done)
            done += len(x)
    except tf.errors.OpError as e:
        reason = _reason(e)
        single = make([path]).skip(done).take(BATCH).batch(1).map(convert)
        try:
            for _ in single.as_numpy_iterator():
                done += 1
        except tf.errors.OpError as bad:
            reason = _reason(bad)
        raise DatasetError(f"`{entry.rel}` ({field}) {unit} {done + first_row} cannot be read: "
                           f"{reason}", field=field) from None


def _csv(source: Csv, listing: Listing, fingerprint: str) -> Registered:
    import tensorflow as tf

    from lrsearch.datasets.streams import csv_defaults

    first = listing.train[0] if listing.train else None
    if first is None:
        raise DatasetError("`source.uri` is a folder without .csv files; put the CSV files "
                           "directly in it", field="source.uri")
    header = read_header(first.path, first.rel)
    columns = csv_columns(source, header, first.rel)
    sides = [("train", listing.train), ("val", listing.val)]
    for side, files in sides:
        for entry in files:
            other = read_header(entry.path, entry.rel, field=_field(side))
            if other != header:
                raise DatasetError(f"`{entry.rel}` ({_field(side)}) has the header "
                                   f"{', '.join(other)}; `{first.rel}` has {', '.join(header)}. "
                                   "Every CSV file needs the same columns in the same order",
                                   field=_field(side))
    if source.validation_uri is not None and not listing.val:
        raise DatasetError("`source.validation_uri` is a folder without .csv files",
                           field="source.validation_uri")
    defaults = csv_defaults(source, columns)
    names = [columns.names[i] for i in columns.select]

    def make(paths: list[bytes]) -> tf.data.Dataset:
        return tf.data.experimental.CsvDataset(paths, defaults, header=True,
                                               select_cols=list(columns.select))

    def convert(*batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.stack([tf.cast(batch[i], tf.float32) for i in columns.features], axis=-1)
        return x, tf.cast(batch[columns.target], tf.float64)

    scan = _Scan(source.val_fraction if source.validation_uri is None else None)
    for side, files in sides:
        for entry in files:
            _scan_csv_file(scan, side, entry, make, convert, source, names, columns)
    train, val = _counts(source, scan.index, scan.sides["val"].rows
                         if source.validation_uri is not None else 0)
    head = _head_of(scan, source.task, (), source.target)
    return Registered.of(train, val, (len(columns.features),), head, fingerprint)


def _scan_csv_file(scan: _Scan, side: str, entry: FileEntry, make: Callable[[Any], Any],
                   convert: Callable[..., tuple[Any, Any]], source: Csv, names: list[str],
                   columns: CsvColumns) -> None:
    field = _field(side)

    def where(position: int) -> Callable[[int], str]:
        # Rows counted from 1 after the header: row r is line r + 1 of the file.
        return lambda k: f"`{entry.rel}` ({field}) row {position + k + 1}"

    def on_batch(x: np.ndarray, y: np.ndarray, position: int) -> None:
        _check_batch(scan, side, x, y, source.task, where(position), field,
                     "a feature column", f"the target column `{source.target}`")

    try:
        _scan_file(entry, field, make, convert, on_batch, "row", 1)
    except DatasetError as e:
        # TensorFlow numbers the selected columns: name them.
        message = re.sub(r"Field (\d+)", lambda m: f"column `{names[int(m.group(1))]}`"
                         if int(m.group(1)) < len(names) else m.group(0), str(e))
        raise DatasetError(message, field=e.field) from None


# A record longer than this is refused before TensorFlow reads it: TFRecordDataset allocates
# what a record's header declares, and a 76-byte file declaring 2**40 bytes kills its process.
MAX_RECORD_BYTES = 256 << 20
_PIECE = 1 << 20


class _Plain:
    """Bytes of a file, read as they are or inflated (GZIP, ZLIB) a piece at a time.

    GZIP: every member of a multi-member file is inflated in turn (TensorFlow reads them
    all, so the framing check must too). ZLIB: bytes after the stream's end are refused
    (`DatasetError`). Holds at most one piece of inflated data beyond what was asked."""

    def __init__(self, path: str, compression: str) -> None:
        self.raw = open(path, "rb")  # noqa: SIM115  (closed by close())
        self.size = os.fstat(self.raw.fileno()).st_size
        self.compression = compression
        self.inflate: Any = self._decompressor()
        self.buffer = bytearray()
        self.start = 0  # where the unread part of `buffer` begins

    def _decompressor(self) -> Any:
        if self.compression == "GZIP":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self.compression == "ZLIB":
            return zlib.decompressobj()
        return None

    def _more(self) -> bool:
        """Inflate one more piece into the buffer; False at the end of the input."""
        assert self.inflate is not None
        if self.inflate.eof:
            rest = self.inflate.unused_data
            if self.compression != "GZIP":
                if rest or self.raw.read(1):
                    raise DatasetError("the file holds bytes after the end of its ZLIB stream",
                                       field="source.uri")
                return False
            self.inflate = self._decompressor()  # the next gzip member
            data = rest or self.raw.read(_PIECE)
        else:
            data = self.inflate.unconsumed_tail or self.raw.read(_PIECE)
        if not data:
            return False
        del self.buffer[:self.start]
        self.start = 0
        self.buffer += self.inflate.decompress(data, _PIECE)
        return True

    def read(self, n: int) -> bytes:
        """Up to `n` bytes (fewer only at the end)."""
        if self.inflate is None:
            return self.raw.read(n)
        while len(self.buffer) - self.start < n and self._more():
            pass
        out = bytes(self.buffer[self.start:self.start + n])
        self.start += len(out)
        return out

    def skip(self, n: int) -> int:
        """Skip `n` bytes; returns how many there were (an uncompressed file seeks)."""
        if self.inflate is None:
            here = self.raw.tell()
            done = min(n, self.size - here)
            self.raw.seek(here + done)
            return done
        done = 0
        while done < n:
            piece = self.read(min(_PIECE, n - done))
            if not piece:
                break
            done += len(piece)
        return done

    def close(self) -> None:
        self.raw.close()


def _check_framing(entry: FileEntry, compression: str, field: str) -> None:
    """Walk a TFRecord file's framing in Python before TensorFlow reads it: each record is a
    little-endian uint64 length, its 4-byte CRC, the data and a 4-byte CRC. A record longer
    than MAX_RECORD_BYTES or than what is left of the file is refused, naming it."""
    stream = _Plain(entry.path, compression)
    record = 0
    try:
        while True:
            head = stream.read(12)
            if not head:
                return
            if len(head) < 12:
                raise DatasetError(f"`{entry.rel}` ({field}) record {record} is cut short: "
                                   "the file ends inside its header", field=field)
            (length,) = struct.unpack("<Q", head[:8])
            if length > MAX_RECORD_BYTES:
                raise DatasetError(f"`{entry.rel}` ({field}) record {record} declares {length} "
                                   f"bytes, more than the {MAX_RECORD_BYTES} a record may "
                                   "hold", field=field)
            if stream.skip(length + 4) < length + 4:
                raise DatasetError(f"`{entry.rel}` ({field}) record {record} is cut short: it "
                                   f"declares {length} bytes", field=field)
            record += 1
    except (OSError, zlib.error, EOFError) as e:
        raise DatasetError(f"`{entry.rel}` ({field}) cannot be read as "
                           f"{compression or 'uncompressed'} TFRecord: {e}", field=field) from None
    finally:
        stream.close()


def _tfrecord(source: TFRecord, listing: Listing, fingerprint: str) -> Registered:
    import tensorflow as tf

    from lrsearch.datasets.streams import convert_examples, tfrecord_input_shape

    if not listing.train:
        raise DatasetError("`source.uri` is a folder without .tfrecord or .tfrecords files",
                           field="source.uri")
    if source.validation_uri is not None and not listing.val:
        raise DatasetError("`source.validation_uri` is a folder without .tfrecord or "
                           ".tfrecords files", field="source.validation_uri")

    def make(paths: list[bytes]) -> tf.data.Dataset:
        return tf.data.TFRecordDataset(paths, compression_type=source.compression)

    def convert(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = convert_examples(source, serialized)
        return x, tf.cast(y, tf.float64) if source.task == "classes" else y

    scan = _Scan(source.val_fraction if source.validation_uri is None else None)
    for side, files in (("train", listing.train), ("val", listing.val)):
        field = _field(side)
        for entry in files:
            def on_batch(x: np.ndarray, y: np.ndarray, position: int, side: str = side,
                         entry: FileEntry = entry, field: str = field) -> None:
                _check_batch(scan, side, x, y, source.task,
                             lambda k: f"`{entry.rel}` ({field}) record {position + k}",
                             field, f"feature `{source.input}`", f"feature `{source.target}`")

            _check_framing(entry, source.compression, field)
            _scan_file(entry, field, make, convert, on_batch, "record", 0)
    train, val = _counts(source, scan.index, scan.sides["val"].rows
                         if source.validation_uri is not None else 0)
    target_shape = source.features[source.target].shape
    head = _head_of(scan, source.task, target_shape, source.target)
    return Registered.of(train, val, tfrecord_input_shape(source), head, fingerprint)


# --- npy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Array:
    """One .npy file as its header declares it (checked against the file's size)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    path: str


def _npy_header(entry: FileEntry, field: str) -> _Array:
    """The header of a .npy file: version 1.0-3.0, at most NPY_MAX_HEADER_BYTES, a numeric
    dtype (no objects, no records), and data exactly as long as the shape says."""
    try:
        with open(entry.path, "rb") as f:
            version = npy_format.read_magic(f)
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            reader = (npy_format.read_array_header_1_0 if version == (1, 0)
                      else npy_format.read_array_header_2_0)
            shape, _, dtype = reader(f, max_header_size=NPY_MAX_HEADER_BYTES)
            offset = f.tell()
    except (ValueError, EOFError, OSError, SyntaxError) as e:
        raise DatasetError(f"`{entry.rel}` ({field}) is not a valid .npy file: {e}",
                           field=field) from None
    if dtype.hasobject:
        raise DatasetError(f"`{entry.rel}` ({field}) holds Python objects (dtype {dtype}), "
                           "which cannot be read without pickle; pickle is refused. Save "
                           "numbers", field=field)
    if dtype.kind not in "buif" or dtype.subdtype is not None or dtype.names is not None:
        raise DatasetError(f"`{entry.rel}` ({field}) must hold numbers (booleans, integers or "
                           f"floats). Received dtype {dtype}", field=field)
    declared = offset + math.prod(shape) * dtype.itemsize
    if declared != entry.size:
        raise DatasetError(f"`{entry.rel}` ({field}) declares shape {tuple(shape)} of {dtype} "
                           f"({declared} bytes with its header) but the file has {entry.size} "
                           "bytes", field=field)
    return _Array(entry.rel, tuple(int(d) for d in shape), dtype, entry.path)


def _npy_rules(x: _Array, y: _Array, field: str) -> None:
    """The shape rules of .npz uploads: x (samples, features...), y one class id or a
    vector of float targets per sample."""
    if len(x.shape) < 2 or x.shape[0] < 1:
        raise DatasetError(f"`x.npy` ({field}) must have shape (samples, features...). "
                           f"Received shape {x.shape}", field=field)
    n = x.shape[0]
    if y.dtype.kind != "f":
        if y.shape not in ((n,), (n, 1)):
            raise DatasetError(f"`y.npy` ({field}) holds integers, so class ids: it must hold "
                               f"one per sample, shape ({n},). Received shape {y.shape}",
                               field=field)
        return
    if not (y.shape == (n,) or (len(y.shape) == 2 and y.shape[0] == n and y.shape[1] >= 1)):
        raise DatasetError(f"`y.npy` ({field}) holds floats, so float targets: it must have "
                           f"shape ({n},) or ({n}, k). Received shape {y.shape}", field=field)
    if len(y.shape) == 2 and y.shape[1] > MAX_TARGETS:
        raise DatasetError(f"`y.npy` ({field}) must hold at most {MAX_TARGETS} targets per "
                           f"sample. Received shape {y.shape}", field=field)


def _chunks(array: _Array) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of a memory-mapped array, at most NPY_CHUNK_BYTES at a time."""
    data = np.load(array.path, mmap_mode="r", allow_pickle=False)
    row_bytes = max(1, math.prod(array.shape[1:]) * array.dtype.itemsize)
    step = max(1, NPY_CHUNK_BYTES // row_bytes)
    for start in range(0, array.shape[0], step):
        yield start, np.asarray(data[start:start + step])


def _npy_values(array: _Array, field: str, labels: Callable[[int, np.ndarray], None] | None
                ) -> None:
    """The element rules, a chunk at a time: floats finite within float32's range, bools
    0 or 1; integer labels go to `labels(first row, ids)`."""
    for start, chunk in _chunks(array):
        where = f"`{array.name}` ({field})"
        if chunk.dtype.kind == "f":
            finite = np.isfinite(chunk)
            if not finite.all():
                row = start + int(np.argmin(finite.reshape(len(chunk), -1).all(axis=1)))
                raise DatasetError(f"{where} holds NaN or infinite values (row {row})",
                                   field=field)
            if chunk.size and np.abs(chunk).max() > FLOAT32_MAX:
                raise DatasetError(f"{where} holds values beyond float32's range",
                                   field=field)
        elif chunk.dtype.kind == "b" and chunk.size and chunk.view(np.uint8).max() > 1:
            raise DatasetError(f"{where} holds a bool stored as a byte other than 0 or 1",
                               field=field)
        if labels is not None:
            labels(start, chunk.reshape(len(chunk)))


def _npy(source: Npy, listing: Listing, fingerprint: str) -> Registered:
    sides = [("train", listing.train)]
    if source.validation_uri is not None:
        sides.append(("val", listing.val))
    arrays: dict[str, tuple[_Array, _Array]] = {}
    for side, files in sides:
        x, y = (_npy_header(f, _field(side)) for f in files)
        _npy_rules(x, y, _field(side))
        arrays[side] = (x, y)
    x, y = arrays["train"]
    if "val" in arrays:
        xv, yv = arrays["val"]
        if xv.shape[1:] != x.shape[1:]:
            raise DatasetError(f"Validation samples have shape {xv.shape[1:]}, training "
                               f"samples {x.shape[1:]}", field="source.validation_uri")
        if (yv.dtype.kind == "f") != (y.dtype.kind == "f") or (
                y.dtype.kind == "f" and yv.shape[1:] != y.shape[1:]):
            raise DatasetError(f"Validation labels (dtype {yv.dtype}, shape {yv.shape}) must "
                               f"hold what training labels hold (dtype {y.dtype}, shape "
                               f"{y.shape}): class ids, or targets of the same shape",
                               field="source.validation_uri")
    n = x.shape[0]
    train, val = _counts(source, n, arrays["val"][0].shape[0] if "val" in arrays else 0)
    scan = _Scan(source.val_fraction if source.validation_uri is None else None)
    task = "targets" if y.dtype.kind == "f" else "classes"
    for side, (xs, ys) in arrays.items():
        field = _field(side)
        _npy_values(xs, field, None)

        def labels(start: int, ids: np.ndarray, side: str = side, field: str = field) -> None:
            if side == "train":
                scan.index = start
            _check_batch(scan, side, np.zeros((len(ids), 0), np.float32), ids, task,
                         lambda k: f"`y.npy` ({field}) row {start + k}", field, "x", "y")

        _npy_values(ys, field, labels if task == "classes" else None)
    head = _head_of(scan, task, y.shape[1:] if task == "targets" else (), "y.npy")
    return Registered.of(train, val, x.shape[1:], head, fingerprint)
