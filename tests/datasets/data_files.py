"""Writers of tiny data-reference files (image folders, CSV, TFRecord, npy) for tests.

Every writer is deterministic (fixed seeds) and returns what a source's `uri` names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_image_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (8, 8),
                       mode: str = "RGB") -> Path:
    """`root/<class>/<i>.png` for each class with its number of images: PNGs of `size`
    (width, height) in PIL `mode` ("L", "RGB", "RGBA"), every image a different colour."""
    from PIL import Image

    rng = np.random.default_rng(0)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    for name, count in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
            image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
            image.save(folder / f"{i}.png")
    return root


def write_csv(path: Path, n: int, features: int = 3, target: str = "y",
              regression: bool = True) -> Path:
    """A CSV file of `n` rows: columns f0..f{features-1} then `target`; row i holds the
    features i, i + 0.5, ... (so every row is recognisable) and the target 2 * f0 + 1
    (regression) or the class id i % 3."""
    header = [f"f{j}" for j in range(features)] + [target]
    lines = [",".join(header)]
    for i in range(n):
        values = [f"{i + j / 2:g}" for j in range(features)]
        values.append(f"{2 * i + 1:g}" if regression else str(i % 3))
        lines.append(",".join(values))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tfrecord(path: Path, n: int, shape: tuple[int, ...] = (4,), classes: int = 3) -> Path:
    """`n` tf.train.Example records: "x" float32 of `shape` (every value the record's index
    i) and "y" the int64 class id i % classes."""
    import tensorflow as tf

    size = int(np.prod(shape))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            example = tf.train.Example(features=tf.train.Features(feature={
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=[float(i)] * size)),
                "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % classes])),
            }))
            writer.write(example.SerializeToString())
    return path


def write_npy(folder: Path, n: int, shape: tuple[int, ...] = (4,), classes: int = 3) -> Path:
    """`folder/x.npy` float32 (n, *shape), row i all i, and `folder/y.npy` int64 class ids
    i % classes."""
    folder.mkdir(parents=True, exist_ok=True)
    x = np.broadcast_to(np.arange(n, dtype=np.float32).reshape(n, *([1] * len(shape))),
                        (n, *shape))
    np.save(folder / "x.npy", np.ascontiguousarray(x))
    np.save(folder / "y.npy", np.arange(n, dtype=np.int64) % classes)
    return folder
