"""User datasets uploaded as .npz files: validated before use, never unpickled.

A file holds `x_train`, `y_train` and optionally both `x_val` and `y_val`. Rules: no other
keys; x numeric (uint8 images are scaled to [0, 1]), at least 2-D, finite; y whole class ids
>= 0, one per sample, at least 2 classes; validation arrays shaped like the training ones with
labels the training set knows. Uploaded datasets live in `<data_dir>/uploads/<name>.npz`.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from lrsearch.datasets.base import Dataset
from lrsearch.errors import DatasetError

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
KEYS = {"x_train", "y_train", "x_val", "y_val"}


def check_name(name: str) -> str:
    """Dataset names are plain identifiers: no path separators, no dots, at most 64 chars."""
    if not isinstance(name, str) or not NAME.match(name):
        raise DatasetError(
            "Argument `name` must be 1-64 lowercase letters, digits, '_' or '-', starting with "
            f"a letter or digit. Received: name={name!r}", field="name")
    return name


def upload_path(data_dir: Path, name: str) -> Path:
    return data_dir / "uploads" / f"{check_name(name)}.npz"


def _x(key: str, x: np.ndarray) -> np.ndarray:
    if x.dtype.kind not in "uif":
        raise DatasetError(f"`{key}` must hold numbers. Received dtype {x.dtype}", field=key)
    if x.ndim < 2 or len(x) < 1:
        raise DatasetError(f"`{key}` must have shape (samples, features...). Received shape "
                           f"{x.shape}", field=key)
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise DatasetError(f"`{key}` contains NaN or infinite values", field=key)
    return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)


def _y(key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise DatasetError(f"`{key}` must hold one class id per sample ({n}). Received shape "
                           f"{y.shape}", field=key)
    if y.dtype.kind == "f" and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
        raise DatasetError(f"`{key}` must hold whole class ids", field=key)
    if y.dtype.kind not in "uif":
        raise DatasetError(f"`{key}` must hold class ids. Received dtype {y.dtype}", field=key)
    if len(y) and y.min() < 0:
        raise DatasetError(f"`{key}` holds a negative class id {y.min()}", field=key)
    return y.astype(np.int64)


def _read(path: Path) -> dict[str, np.ndarray]:
    # np.load would take any non-zip file for a pickle or .npy: check the container first.
    if not zipfile.is_zipfile(path):
        raise DatasetError("Not a valid .npz file: it is not a zip archive", field="file")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            unknown = keys - KEYS
            if unknown:
                raise DatasetError(f"Unknown arrays {sorted(unknown)}; allowed: "
                                   f"{sorted(KEYS)}", field="file")
            return {k: f[k] for k in keys}
    except DatasetError:
        raise
    except ValueError as e:  # object arrays need pickle, which is refused
        raise DatasetError(f"Cannot read the arrays without pickle: {e}", field="file") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DatasetError(f"Not a valid .npz file: {e}", field="file") from None


def load_npz(path: Path, name: str) -> Dataset:
    """Read and validate an uploaded .npz (raises DatasetError naming the array at fault)."""
    arrays = _read(path)
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DatasetError(f"The file has no `{key}` array", field=key)
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DatasetError("Give both `x_val` and `y_val`, or neither", field="x_val")
    x = _x("x_train", arrays["x_train"])
    if len(x) < 2:
        raise DatasetError("`x_train` needs at least 2 samples", field="x_train")
    y = _y("y_train", arrays["y_train"], len(x))
    num_classes = int(y.max()) + 1
    if len(np.unique(y)) < 2:
        raise DatasetError("`y_train` must hold at least 2 classes", field="y_train")
    if "x_val" not in arrays:
        from lrsearch.datasets.base import split

        return Dataset(name, *split(x, y, 0.2, 0), num_classes=num_classes)
    xv = _x("x_val", arrays["x_val"])
    if xv.shape[1:] != x.shape[1:]:
        raise DatasetError(f"`x_val` samples have shape {xv.shape[1:]}, `x_train` samples "
                           f"{x.shape[1:]}", field="x_val")
    yv = _y("y_val", arrays["y_val"], len(xv))
    if len(yv) and yv.max() >= num_classes:
        raise DatasetError(f"`y_val` holds class {yv.max()}, unknown to `y_train` (0.."
                           f"{num_classes - 1})", field="y_val")
    return Dataset(name, x, y, xv, yv, num_classes=num_classes)
