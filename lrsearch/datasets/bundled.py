"""Datasets that need no file: scikit-learn's bundled digits and seed 004's synthetic task."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrsearch.datasets.base import Dataset, source, split
from lrsearch.models import Head


@source("digits", "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes).",
        (8, 8, 1), Head.classes(10))
def digits(data_dir: Path | None, val_fraction: float, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]  # pixel values are 0..16
    y = bunch.target.astype(np.int64)
    return Dataset("digits", *split(x, y, val_fraction, seed), Head.classes(10))


@source("synthetic_argmax", "Seed 004's toy task: 3 uniform features, label = argmax "
        "(1,000 train and 200 validation samples, generated from the seed).", (3,),
        Head.classes(3))
def synthetic_argmax(data_dir: Path | None, val_fraction: float, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.random((1200, 3)).astype(np.float32)
    y = np.argmax(x, axis=1).astype(np.int64)
    return Dataset("synthetic_argmax", x[:1000], y[:1000], x[1000:], y[1000:],
                   Head.classes(3))
