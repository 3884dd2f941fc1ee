"""Backend-neutral batches for workers whose Keras backend is not TensorFlow (JAX, PyTorch):
`keras.utils.PyDataset`s built from numpy and Pillow only, with the contract of
`lrsearch.datasets.streams.Input` (same counts, split, shapes and dtypes).

They read in-memory datasets (the built-in ones), memory-mapped arrays (`.npy` references,
`.npz` uploads) and image folders; CSV and TFRecord references need TensorFlow's readers
(DatasetError). A batch is read when Keras asks for it (`__getitem__`), so memory holds a few
batches, never the dataset. Images are decoded by Pillow: PNG, JPEG, BMP and GIF (first
frame) only, the declared size checked before decoding, converted to the colour mode and
resized bilinearly to `image_size`. Pillow's bilinear filter antialiases when it shrinks and
its grey conversion weighs channels 0.299/0.587/0.114, so pixel values may differ slightly
from the TensorFlow pipeline's; at the image's own size and colour mode they are equal."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from lrsearch.datasets.base import Dataset
from lrsearch.datasets.references import (
    MAX_IMAGE_PIXELS,
    FileEntry,
    ImageFolder,
    KerasDataset,
    Npy,
    Registered,
    Source,
    registered_listing,
    split_files,
)
from lrsearch.datasets.uploaded import MappedNpz, as_inputs, as_labels, mapped_npy
from lrsearch.errors import DatasetError, TrainingError, require_int
from lrsearch.models import Head

Reader = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF")
MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class Batches(keras.utils.PyDataset):
    """Batches of `read(rows)` over `n` examples: in a seeded order that changes every epoch
    (`seed`), or in order (`seed` None). ceil(n / batch_size) batches, the last partial."""

    def __init__(self, read: Reader, n: int, batch_size: int, seed: int | None,
                 workers: int = 1) -> None:
        super().__init__(workers=workers, use_multiprocessing=False)
        self.read, self.n, self.batch_size, self.seed = read, n, batch_size, seed
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if self.seed is None:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def __len__(self) -> int:
        return max(1, math.ceil(self.n / self.batch_size))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.read(self.order[index * self.batch_size:(index + 1) * self.batch_size])

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()


class PortableInput:
    """streams.Input's contract with PyDatasets: `train(batch_size, seed)` (a new order each
    epoch), `val(batch_size)`, `val_arrays(n)`."""

    def __init__(self, input_shape: Sequence[int], head: Head,
                 sides: dict[str, tuple[Reader, int]], workers: int = 1) -> None:
        self.input_shape = tuple(int(d) for d in input_shape)
        self.head, self.sides, self.workers = head, sides, workers
        self.train_examples, self.val_examples = sides["train"][1], sides["val"][1]

    def train(self, batch_size: int, seed: int) -> Batches:
        require_int("batch_size", batch_size, 1, TrainingError)
        require_int("seed", seed, 0, TrainingError)
        read, n = self.sides["train"]
        return Batches(read, n, batch_size, seed, self.workers)

    def val(self, batch_size: int) -> Batches:
        require_int("batch_size", batch_size, 1, TrainingError)
        read, n = self.sides["val"]
        return Batches(read, n, batch_size, None, self.workers)

    def close(self) -> None:
        """Nothing to release: batches are read on demand."""

    def val_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        require_int("n", n, 0, TrainingError)
        read, total = self.sides["val"]
        return read(np.arange(min(n, total)))


def _rows(x: np.ndarray, y: np.ndarray, rows: np.ndarray, head: Head) -> tuple[Reader, int]:
    def read(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        picked = rows[index]
        order = np.argsort(picked)  # read in file order, hand back in the asked order
        back = np.argsort(order)
        return as_inputs(x[picked[order]])[back], as_labels(y[picked[order]], head)[back]

    return read, len(rows)


def from_arrays(data: Dataset) -> PortableInput:
    """An in-memory dataset (already float32 and scaled)."""
    every = np.arange
    return PortableInput(data.input_shape, data.head, {
        "train": _rows(data.x_train, data.y_train, every(len(data.x_train)), data.head),
        "val": _rows(data.x_val, data.y_val, every(len(data.x_val)), data.head)})


def from_npz(upload: MappedNpz) -> PortableInput:
    """Memory-mapped arrays: an uploaded .npz (lrsearch.datasets.uploaded.open_npz) or a
    `.npy` reference (`mapped_npy`)."""
    return PortableInput(upload.input_shape, upload.head, {
        "train": _rows(*upload.train, upload.head), "val": _rows(*upload.val, upload.head)})


def _grey16(image: Any, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """A 16-bit grey image scaled by 65535 (as TensorFlow's decoder does), resized, with
    the channels asked for (grey copied; an opaque alpha)."""
    from PIL import Image

    grey = Image.fromarray(np.asarray(image, dtype=np.float32) / 65535.0)  # mode F
    small = np.asarray(grey.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR),
                       dtype=np.float32).clip(0.0, 1.0)
    if channels == 1:
        return small
    planes = [small] * 3 + ([np.ones_like(small)] if channels == 4 else [])
    return np.stack(planes, axis=-1)


def read_image(path: str, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file -> float32 (height, width, channels) in [0, 1] (see the module
    docstring); DatasetError naming the file when it is not a readable PNG, JPEG, BMP or GIF
    or declares more than MAX_IMAGE_PIXELS pixels."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format not in IMAGE_FORMATS:
                raise DatasetError(f"`{path}` is not a PNG, JPEG, BMP or GIF image (it is "
                                   f"{image.format})", field="dataset")
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DatasetError(f"`{path}` declares {width}x{height} pixels, more than "
                                   f"{MAX_IMAGE_PIXELS}", field="dataset")
            image.seek(0)
            if image.mode.startswith("I"):  # 16-bit grey: Pillow's conversion would clip it
                pixels = _grey16(image, image_size, channels)
            else:
                converted = image.convert(MODES[channels])
                resized = converted.resize((image_size[1], image_size[0]),
                                           Image.Resampling.BILINEAR)
                pixels = np.asarray(resized, dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"`{path}` cannot be read as an image: {e}", field="dataset") \
            from None
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _images(source: ImageFolder, registered: Registered, train: Sequence[FileEntry],
            val: Sequence[FileEntry], workers: int) -> PortableInput:
    """Image files (listing entries with a path and a class id) of each side."""
    size, channels = (source.image_size[0], source.image_size[1]), source.channels

    def side(files: Sequence[FileEntry]) -> tuple[Reader, int]:
        labels = np.array([f.label for f in files], np.int64)

        def read(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if not len(index):
                return np.zeros((0, *size, channels), np.float32), labels[index]
            return np.stack([read_image(files[i].path, size, channels) for i in index]), \
                labels[index]

        return read, len(files)

    return PortableInput(registered.input_shape, registered.head,
                         {"train": side(train), "val": side(val)}, workers)


def from_source(name: str, source: Source, registered: Registered, roots: Sequence[str],
                workers: int = 4) -> PortableInput:
    """A registered `.npy` or image-folder reference, read in place after checking its files
    are the registered ones (DatasetChanged otherwise); other kinds need TensorFlow."""
    if isinstance(source, KerasDataset) or not isinstance(source, Npy | ImageFolder):
        raise DatasetError(f"Dataset `{name}` is a {source.kind} dataset, which only the "
                           "TensorFlow backend reads (tf.data); run this worker with "
                           "KERAS_BACKEND=tensorflow", field="dataset")
    listing = registered_listing(name, source, registered, roots)
    if isinstance(source, Npy):
        return from_npz(mapped_npy(source, listing, registered))
    return _images(source, registered, *split_files(source, listing), workers)
