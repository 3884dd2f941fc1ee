"""What training and range tests consume: an `Input`, streaming batches with tf.data.

`from_arrays` wraps today's in-memory datasets. `from_source` reads a registered data
reference in place, never materialising it: image folders decode and resize files in
parallel from a shuffled path list; CSV and TFRecord files are parsed as they are read and
shuffled through a bounded buffer; x.npy/y.npy are memory-mapped and gathered a batch of
shuffled rows at a time. Before anything is read it recomputes the files' fingerprint: a
dataset changed since registration raises DatasetChanged.

Every training stream is seeded: one pass holds every training example once, in a new
order each pass, the same sequence of orders for the same seed. Validation streams keep
one order. `decode_image` is the one image decoder (registration checks every image with
it), so a registered image decodes to exactly the registered input shape in training.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import math
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from lrsearch.datasets.base import Dataset
from lrsearch.datasets.options import StreamOptions
from lrsearch.datasets.references import (
    MAX_IMAGE_PIXELS,
    Csv,
    CsvColumns,
    DatasetChanged,
    FileEntry,
    FileSource,
    ImageFolder,
    KerasDataset,
    Listing,
    Npy,
    Registered,
    Source,
    TFRecord,
    check_source,
    csv_columns,
    read_header,
    registered_listing,
    split_files,
)
from lrsearch.datasets.uploaded import MappedNpz, as_inputs, as_labels, mapped_npy
from lrsearch.errors import DatasetError, TrainingError, require_int
from lrsearch.models import Head

__all__ = [
    "MAX_IMAGE_PIXELS",
    "DatasetChanged",
    "Input",
    "StreamOptions",
    "decode_image",
    "from_arrays",
    "from_source",
    "is_val",
    "load_image",
]

AUTOTUNE = tf.data.AUTOTUNE
# What a row shuffle buffer may hold, whatever LRSEARCH_SHUFFLE_BUFFER says: 10,000 rows of
# 224x224x3 float features would be 6 GB in every trial's child.
SHUFFLE_BYTES = 256 << 20


# --- images ------------------------------------------------------------------------------


def _uint(head: tf.Tensor, start: int, size: int, *, big_endian: bool) -> tf.Tensor:
    """An unsigned integer of `size` bytes at `start` of the uint8->int64 vector `head`."""
    value = tf.constant(0, tf.int64)
    order = range(start, start + size) if big_endian else range(start + size - 1, start - 1, -1)
    for i in order:
        value = value * 256 + head[i]
    return value


def _declared_pixels(contents: tf.Tensor) -> tf.Tensor:
    """Width x height as the PNG, GIF, BMP or JPEG header declares it; -1 for any other
    format (refused: only these four are read)."""
    first = tf.strings.substr(contents, 0, 32)
    padded = tf.strings.substr(tf.strings.join([first, tf.constant(b"\0" * 32)]), 0, 32)
    head = tf.cast(tf.io.decode_raw(padded, tf.uint8), tf.int64)
    magic = tf.strings.substr(contents, 0, 8)

    def png() -> tf.Tensor:
        return (_uint(head, 16, 4, big_endian=True) * _uint(head, 20, 4, big_endian=True))

    def gif() -> tf.Tensor:
        return (_uint(head, 6, 2, big_endian=False) * _uint(head, 8, 2, big_endian=False))

    def bmp() -> tf.Tensor:
        # BITMAPCOREHEADER (12 bytes) has 16-bit sizes; later headers signed 32-bit ones
        # (a negative height means rows stored top-down).
        def signed(start: int) -> tf.Tensor:
            value = _uint(head, start, 4, big_endian=False)
            return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

        core = _uint(head, 14, 4, big_endian=False) == 12
        return tf.cond(core,
                       lambda: _uint(head, 18, 2, big_endian=False)
                       * _uint(head, 20, 2, big_endian=False),
                       lambda: signed(18) * signed(22))

    def jpeg() -> tf.Tensor:
        shape = tf.cast(tf.io.extract_jpeg_shape(contents), tf.int64)
        return shape[0] * shape[1]

    return tf.case([
        (tf.equal(magic, b"\x89PNG\r\n\x1a\n"), png),
        (tf.equal(tf.strings.substr(magic, 0, 4), b"GIF8"), gif),
        (tf.equal(tf.strings.substr(magic, 0, 2), b"BM"), bmp),
        (tf.io.is_jpeg(contents), jpeg),
    ], default=lambda: tf.constant(-1, tf.int64), exclusive=False)


def _to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """A decoded float image of 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA) channels as
    `channels` channels: grey from RGB by luminance, RGB from grey by copying, an opaque
    alpha where there was none."""

    def convert(c_in: int) -> Callable[[], tf.Tensor]:
        def branch() -> tf.Tensor:
            colour = image[..., :1] if c_in <= 2 else image[..., :3]
            if channels == 1:
                return colour if c_in <= 2 else tf.image.rgb_to_grayscale(colour)
            rgb = tf.tile(colour, [1, 1, 3]) if c_in <= 2 else colour
            if channels == 3:
                return rgb
            alpha = (image[..., c_in - 1:c_in] if c_in in (2, 4)
                     else tf.ones_like(image[..., :1]))
            return tf.concat([rgb, alpha], axis=-1)
        return branch

    found = tf.shape(image)[-1]
    check = tf.debugging.assert_equal(
        tf.logical_and(found >= 1, found <= 4), True,
        message="the image has an unsupported number of channels")
    with tf.control_dependencies([check]):
        index = tf.clip_by_value(found - 1, 0, 3)
    return tf.switch_case(index, [convert(c) for c in (1, 2, 3, 4)])


def decode_image(contents: tf.Tensor, image_size: tuple[int, int], channels: int) -> tf.Tensor:
    """Encoded PNG, JPEG, BMP or GIF (first frame) bytes -> float32 [height, width, channels]
    in [0, 1], resized (bilinear) to `image_size` = (height, width). Raises (as a TensorFlow
    InvalidArgumentError when run) for another format, a header declaring more than
    MAX_IMAGE_PIXELS pixels (checked before decoding), or bytes that do not decode."""
    pixels = _declared_pixels(contents)
    checks = [
        tf.debugging.assert_greater_equal(
            pixels, tf.constant(0, tf.int64),
            message="not a PNG, JPEG, BMP or GIF image"),
        tf.debugging.assert_less_equal(
            pixels, tf.constant(MAX_IMAGE_PIXELS, tf.int64),
            message=f"the image declares more than {MAX_IMAGE_PIXELS} pixels"),
    ]
    with tf.control_dependencies(checks):
        image = tf.io.decode_image(contents, channels=0, dtype=tf.uint8,
                                   expand_animations=False)
    # Resized while still uint8 at full size (a quarter of float32's bytes); the channel
    # conversion is linear, so after the resize it gives the same pixels.
    image = _to_channels(tf.image.resize(image, image_size) / 255.0, channels)
    image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.ensure_shape(image, [*image_size, channels])


def load_image(path: tf.Tensor, image_size: tuple[int, int], channels: int) -> tf.Tensor:
    """`decode_image` of the file at `path`."""
    return decode_image(tf.io.read_file(path), image_size, channels)


# --- the split rule in TensorFlow --------------------------------------------------------


def is_val(index: tf.Tensor, val_fraction: float) -> tf.Tensor:
    """references.val_mask's predicate for one element index (float64, as there)."""
    i = tf.cast(index, tf.float64)
    f = tf.constant(val_fraction, tf.float64)
    return tf.math.floor((i + 1.0) * f) > tf.math.floor(i * f)


def _split(ds: tf.data.Dataset, val_fraction: float, val: bool) -> tf.data.Dataset:
    """The training (val=False) or validation elements of `ds` by the split rule."""
    return (ds.enumerate()
            .filter(lambda i, _: tf.equal(is_val(i, val_fraction), val))
            .map(lambda _, element: element))


# --- inputs ------------------------------------------------------------------------------


# What autotuned buffers (prefetch, parallel decode) may hold together. TensorFlow's default is
# half of the machine's memory, which lets a large dataset's pipeline grow by hundreds of MB
# of buffered batches in every trial's child; a few batches ahead keep a GPU busy.
RAM_BUDGET = 64 << 20


def _bounded(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.autotune.ram_budget = RAM_BUDGET
    return ds.with_options(options)


class Input:
    """Batches for training and validation: x float32 of `input_shape`, y int64 class ids
    of shape () or float32 targets of head.target_shape.

    `train(batch_size, seed)`: passes of ceil(train_examples / batch_size) batches (the last
    one partial), each pass every training example once in a new order, the sequence of
    orders fixed by `seed`; repeated forever. `val(batch_size)`: the validation examples in
    one fixed order, ceil(val_examples / batch_size) batches a pass, repeated forever.
    `val_arrays(n)`: the first min(n, val_examples) validation examples as arrays."""

    def __init__(self, input_shape: tuple[int, ...], head: Head, train_examples: int,
                 val_examples: int) -> None:
        self.input_shape = tuple(int(d) for d in input_shape)
        self.head = head
        self.train_examples = int(train_examples)
        self.val_examples = int(val_examples)

    def _train_pass(self, batch_size: int, seed: int) -> tf.data.Dataset:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the run wrote (a disk cache); nothing for most inputs."""

    def _val_pass(self, batch_size: int) -> tf.data.Dataset:
        raise NotImplementedError

    def train(self, batch_size: int, seed: int) -> tf.data.Dataset:
        require_int("batch_size", batch_size, 1, TrainingError)
        require_int("seed", seed, 0, TrainingError)
        return _bounded(self._train_pass(batch_size, seed).repeat().prefetch(AUTOTUNE))

    def val(self, batch_size: int) -> tf.data.Dataset:
        require_int("batch_size", batch_size, 1, TrainingError)
        return _bounded(self._val_pass(batch_size).repeat().prefetch(AUTOTUNE))

    def val_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        require_int("n", n, 0, TrainingError)
        want = min(n, self.val_examples)
        xs, ys, got = [], [], 0
        if want:
            for x, y in self._val_pass(min(want, 256)).as_numpy_iterator():
                xs.append(x)
                ys.append(y)
                got += len(x)
                if got >= want:
                    break
        if not xs:
            y_dtype = np.int64 if self.head.kind == "classes" else np.float32
            return (np.zeros((0, *self.input_shape), np.float32),
                    np.zeros((0, *self.head.target_shape), y_dtype))
        return np.concatenate(xs)[:want], np.concatenate(ys)[:want]


class _ArrayInput(Input):
    def __init__(self, data: Dataset) -> None:
        super().__init__(data.input_shape, data.head, len(data.x_train), len(data.x_val))
        self.data = data

    def _train_pass(self, batch_size: int, seed: int) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((self.data.x_train, self.data.y_train))
        return ds.shuffle(len(self.data.x_train), seed=seed,
                          reshuffle_each_iteration=True).batch(batch_size)

    def _val_pass(self, batch_size: int) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((self.data.x_val, self.data.y_val))
        return ds.batch(batch_size)

    def val_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        require_int("n", n, 0, TrainingError)
        return self.data.x_val[:n], self.data.y_val[:n]


def from_arrays(data: Dataset) -> Input:
    """An in-memory Dataset (today's built-in and uploaded datasets) as an Input."""
    return _ArrayInput(data)


def _sides(source: FileSource, listing: Listing
           ) -> tuple[tuple[FileEntry, ...], tuple[FileEntry, ...], bool]:
    """(training files, validation files, whether the split rule applies): without a
    validation_uri both sides read the uri's files and the rule picks the elements."""
    if source.validation_uri is None:
        return listing.train, listing.train, True
    return listing.train, listing.val, False


class _FileInput(Input):
    """Streams that read files: caching and shuffling as `options` say."""

    def __init__(self, source: FileSource, registered: Registered, options: StreamOptions
                 ) -> None:
        super().__init__(registered.input_shape, registered.head, registered.train_examples,
                         registered.val_examples)
        self.source, self.registered, self.options = source, registered, options
        self._cache_files: list[str] = []

    def _cache(self, ds: tf.data.Dataset, side: str) -> tf.data.Dataset:
        if self.options.cache == "memory":
            return ds.cache()
        if self.options.cache == "disk":
            assert self.options.cache_dir is not None
            key = hashlib.sha256(f"{self.registered.fingerprint}\0"
                                 f"{self.source.model_dump_json()}".encode()).hexdigest()[:24]
            # One cache per run, named by host and process too: the data directory may be
            # shared by machines whose children have the same pids, and two writers of one
            # cache file collide on TensorFlow's lock file. `close()` removes it.
            os.makedirs(self.options.cache_dir, exist_ok=True)
            prefix = os.path.join(self.options.cache_dir, f"lrsearch-{key}-{side}-"
                                  f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}")
            self._cache_files.append(prefix)
            return ds.cache(prefix)
        return ds

    def close(self) -> None:
        """Remove the disk cache this run wrote (its files begin with the cache's name)."""
        for prefix in self._cache_files:
            for path in glob.glob(glob.escape(prefix) + "*"):
                with contextlib.suppress(OSError):
                    os.remove(path)
        self._cache_files.clear()

    def _shuffled(self, ds: tf.data.Dataset, seed: int, buffer: int) -> tf.data.Dataset:
        return ds.shuffle(max(1, buffer), seed=seed, reshuffle_each_iteration=True)


class _ImageInput(_FileInput):
    def __init__(self, source: ImageFolder, registered: Registered, listing: Listing,
                 options: StreamOptions) -> None:
        super().__init__(source, registered, options)
        self.image = source
        train, val = split_files(source, listing)
        self.files = {"train": train, "val": val}

    def _elements(self, side: str, seed: int | None) -> tf.data.Dataset:
        files = self.files[side]
        ds = tf.data.Dataset.from_tensor_slices(
            (np.array([os.fsencode(f.path) for f in files], dtype=object),
             np.array([f.label for f in files], dtype=np.int64)))
        size, channels = self.image.image_size, self.image.channels

        def load(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return load_image(path, size, channels), label

        if self.options.cache == "none":
            if seed is not None:  # the path list is shuffled whole
                ds = self._shuffled(ds, seed, len(files))
            return ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
        if seed is not None:  # mixed once, before the cache fixes the order
            ds = ds.shuffle(len(files), seed=0, reshuffle_each_iteration=False)
        ds = self._cache(ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True), side)
        if seed is not None:  # decoded images: the buffer bounded in bytes too
            image = 4 * math.prod(self.input_shape)
            ds = self._shuffled(ds, seed, min(len(files), self.options.shuffle_buffer,
                                              max(1, SHUFFLE_BYTES // image)))
        return ds

    def _train_pass(self, batch_size: int, seed: int) -> tf.data.Dataset:
        return self._elements("train", seed).batch(batch_size)

    def _val_pass(self, batch_size: int) -> tf.data.Dataset:
        return self._elements("val", None).batch(batch_size)


class _RowInput(_FileInput):
    """CSV and TFRecord: rows read in file order (files in name order, so the split rule's
    element index is the row's position); with a validation_uri the training files are
    shuffled whole each pass instead. Rows are shuffled through `shuffle_buffer`, batched,
    then converted a batch at a time (`_convert`)."""

    def __init__(self, source: Csv | TFRecord, registered: Registered, listing: Listing,
                 options: StreamOptions) -> None:
        super().__init__(source, registered, options)
        train, val, self.split = _sides(source, listing)
        # Bytes: a file name need not be valid UTF-8.
        self.files = {"train": [os.fsencode(f.path) for f in train],
                      "val": [os.fsencode(f.path) for f in val]}

    def _rows(self, files: Sequence[bytes] | tf.Tensor) -> tf.data.Dataset:
        raise NotImplementedError

    def _convert(self, *batch: Any) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def _elements(self, side: str, seed: int | None) -> tf.data.Dataset:
        files = self.files[side]
        if self.split:
            ds = _split(self._rows(files), self.source.val_fraction, side == "val")
        elif seed is not None:
            ds = (tf.data.Dataset.from_tensor_slices(np.array(files, dtype=object))
                  .shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
                  .interleave(self._rows, cycle_length=1))
        else:
            ds = self._rows(files)
        ds = self._cache(ds, side)
        if seed is not None:
            row = 4 * (math.prod(self.input_shape) + max(1, math.prod(self.head.target_shape)))
            ds = self._shuffled(ds, seed, min(self.options.shuffle_buffer,
                                              max(1, SHUFFLE_BYTES // row)))
        return ds

    def _train_pass(self, batch_size: int, seed: int) -> tf.data.Dataset:
        return (self._elements("train", seed).batch(batch_size)
                .map(self._convert, num_parallel_calls=AUTOTUNE, deterministic=True))

    def _val_pass(self, batch_size: int) -> tf.data.Dataset:
        return (self._elements("val", None).batch(batch_size)
                .map(self._convert, num_parallel_calls=AUTOTUNE, deterministic=True))


def csv_defaults(source: Csv, columns: CsvColumns) -> list[tf.Tensor]:
    """CsvDataset's record defaults: every selected column required, float32; class ids are
    read as float64 so that whole numbers up to 2**53 stay exact."""
    target = tf.float64 if source.task == "classes" else tf.float32
    return [tf.constant([], target if i == columns.target else tf.float32)
            for i in range(len(columns.select))]


class _CsvInput(_RowInput):
    def __init__(self, source: Csv, registered: Registered, listing: Listing,
                 options: StreamOptions) -> None:
        super().__init__(source, registered, listing, options)
        self.csv = source
        first = listing.train[0]
        self.columns = csv_columns(source, read_header(first.path, first.rel), first.rel)

    def _rows(self, files: Sequence[bytes] | tf.Tensor) -> tf.data.Dataset:
        return tf.data.experimental.CsvDataset(
            files, csv_defaults(self.csv, self.columns), header=True,
            select_cols=list(self.columns.select))

    def _convert(self, *batch: Any) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.stack([batch[i] for i in self.columns.features], axis=-1)
        y = batch[self.columns.target]
        if self.csv.task == "classes":
            return x, tf.cast(y, tf.int64)
        return x, tf.cast(y, tf.float32)


def tfrecord_spec(source: TFRecord) -> dict[str, tf.io.FixedLenFeature]:
    """The parsing spec of the input and target features."""
    return {key: tf.io.FixedLenFeature(list(source.features[key].shape),
                                       tf.as_dtype(source.features[key].dtype))
            for key in (source.input, source.target)}


def tfrecord_input_shape(source: TFRecord) -> tuple[int, ...]:
    """The input shape of a TFRecord source: the input feature's shape, (1,) for a scalar."""
    return source.features[source.input].shape or (1,)


def convert_examples(source: TFRecord, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch of serialized examples -> (x float32 [b, *input_shape], y int64 [b] class ids
    or float32 [b, *target shape])."""
    parsed = tf.io.parse_example(serialized, tfrecord_spec(source))
    x = tf.cast(parsed[source.input], tf.float32)
    x = tf.reshape(x, [-1, *tfrecord_input_shape(source)])
    y = parsed[source.target]
    if source.task == "classes":
        return x, tf.reshape(tf.cast(y, tf.int64), [-1])
    return x, tf.cast(y, tf.float32)


class _TFRecordInput(_RowInput):
    def __init__(self, source: TFRecord, registered: Registered, listing: Listing,
                 options: StreamOptions) -> None:
        super().__init__(source, registered, listing, options)
        self.record = source

    def _rows(self, files: Sequence[bytes] | tf.Tensor) -> tf.data.Dataset:
        return tf.data.TFRecordDataset(files, compression_type=self.record.compression)

    def _convert(self, *batch: Any) -> tuple[tf.Tensor, tf.Tensor]:
        return convert_examples(self.record, batch[0])


Side = tuple[np.ndarray, np.ndarray, np.ndarray]  # (x, y, the rows of this side)


class _RowsInput(Input):
    """Arrays read in place (memory-mapped): a batch of shuffled row indices gathered at a
    time, converted a batch at a time (`as_inputs`, `as_labels`), so memory holds a few
    batches, never the arrays."""

    def __init__(self, train: Side, val: Side, head: Head, input_shape: tuple[int, ...]
                 ) -> None:
        super().__init__(input_shape, head, len(train[2]), len(val[2]))
        self.sides = {"train": train, "val": val}

    def _gather(self, side: str) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
        x, y, rows = self.sides[side]
        head = self.head
        y_dtype = tf.int64 if head.kind == "classes" else tf.float32
        x_shape = [None, *self.input_shape]
        y_shape = [None, *self.head.target_shape]

        def read(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            picked = np.sort(rows[index])  # in file order: one pass over the pages
            order = np.argsort(np.argsort(rows[index]))
            return as_inputs(x[picked])[order], as_labels(y[picked], head)[order]

        def gather(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            bx, by = tf.numpy_function(read, [index], [tf.float32, y_dtype], stateful=False)
            return tf.ensure_shape(bx, x_shape), tf.ensure_shape(by, y_shape)

        return gather

    def _train_pass(self, batch_size: int, seed: int) -> tf.data.Dataset:
        n = self.train_examples
        return (tf.data.Dataset.range(n)
                .shuffle(n, seed=seed, reshuffle_each_iteration=True)
                .batch(batch_size)
                .map(self._gather("train"), num_parallel_calls=AUTOTUNE, deterministic=True))

    def _val_pass(self, batch_size: int) -> tf.data.Dataset:
        return (tf.data.Dataset.range(self.val_examples).batch(batch_size)
                .map(self._gather("val"), num_parallel_calls=AUTOTUNE, deterministic=True))


def from_npz(upload: MappedNpz) -> Input:
    """Memory-mapped arrays read in place: an uploaded .npz (lrsearch.datasets.uploaded.
    open_npz, the validation rows its own or the seeded hold-out) or a `.npy` reference
    (`mapped_npy`)."""
    return _RowsInput(upload.train, upload.val, upload.head, upload.input_shape)


def from_source(name: str, source: Source, registered: Registered, roots: Sequence[str],
                options: StreamOptions | None = None) -> Input:
    """The registered data reference `source` as an Input, read in place. First lists the
    files again: a fingerprint other than the registered one raises DatasetChanged (the
    dataset must be registered again). A Keras dataset is not a file source: DatasetError."""
    options = options or StreamOptions()
    if isinstance(source, KerasDataset):
        raise DatasetError(f"Dataset `{name}` is a Keras dataset ({source.dataset}); it is "
                           "loaded as arrays, not streamed from files", field="dataset")
    listing = registered_listing(name, source, registered, roots)
    checked = check_source(source, roots, deep=False)
    if isinstance(checked, ImageFolder):
        return _ImageInput(checked, registered, listing, options)
    if isinstance(checked, Csv):
        return _CsvInput(checked, registered, listing, options)
    if isinstance(checked, TFRecord):
        return _TFRecordInput(checked, registered, listing, options)
    assert isinstance(checked, Npy)  # read in place already: the cache option does not apply
    return from_npz(mapped_npy(checked, listing, registered))
