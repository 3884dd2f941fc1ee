"""Data references: datasets read in place from files under operator-configured roots.

A *source* says where the files are and how to read them: an image folder, CSV files,
TFRecord files, a folder of `x.npy`/`y.npy`, or a Keras dataset downloaded on demand. The
operator opens folders (or remote prefixes such as gs://bucket/data/) to references with
LRSEARCH_DATA_ROOTS; nothing outside them is ever read:

- `check_uri` is the string-level check the API can always do: the uri is normalised, must
  lie under a root, and may not climb out of it with "..".
- `resolve_local` follows symlinks: the real path must still lie under the real path of a
  root. Registration and streaming apply it to every folder and file they list, so a symlink
  leaving the roots is refused wherever it hides.

`list_files` lists what a source reads, in the order the split rule counts it; `fingerprint`
hashes that listing (names, sizes, modification times) so a trial can tell the files have
changed since registration. `val_mask` is the split rule itself. Registration
(lrsearch.datasets.register) reads everything once and returns `Registered`.

Nothing here imports TensorFlow at module level (the API imports this module); remote
listings import it when they are needed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, TypeAdapter, model_validator

from lrsearch.errors import DatasetError
from lrsearch.frozen import Frozen
from lrsearch.models import Head

ROOTS_SETTING = "LRSEARCH_DATA_ROOTS"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
CSV_EXTENSIONS = (".csv",)
TFRECORD_EXTENSIONS = (".tfrecord", ".tfrecords")
NPY_FILES = ("x.npy", "y.npy")
MAX_URI_LENGTH = 4096
# The values one TFRecord feature may hold per example (a 4096x4096x4 image).
MAX_FEATURE_VALUES = 1 << 26
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

Side = Annotated[int, Field(ge=1, le=4096)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Uri = Annotated[str, Field(min_length=1, max_length=MAX_URI_LENGTH)]
Name = Annotated[str, Field(min_length=1, max_length=256)]
Task = Literal["classes", "targets"]


def changed(name: str) -> DatasetChanged:
    """The error of a dataset whose files are not the registered ones."""
    return DatasetChanged(f"The files of `{name}` are not the registered ones: dataset changed "
                          "since registration (files added, removed or modified). Register "
                          "it again.", field="dataset")


# The most pixels an image may declare in its header (8192 x 8192): the header is checked
# before decoding, so a small file declaring a huge canvas is refused, not allocated.
MAX_IMAGE_PIXELS = 1 << 26


class DatasetChanged(DatasetError):
    """The files of a registered dataset are not the ones registered (added, removed or
    modified since): training refuses to start, the dataset must be registered again."""


class _Files(Frozen):
    """What every file source has: where the training data is, and where validation comes
    from (a separate folder or file, else every k-th element by `val_fraction`)."""

    uri: Uri
    validation_uri: Uri | None = None
    val_fraction: Fraction = 0.2


class ImageFolder(_Files):
    """A folder with one subfolder per class (sorted names are class ids 0..k-1) holding
    .png/.jpg/.jpeg/.bmp/.gif files (any case, in nested folders too). Names starting with "."
    and other files are ignored. Images are resized to `image_size` (height, width), scaled to
    [0, 1], with 1, 3 or 4 channels per `color_mode`. A `validation_uri` folder has the same
    class subfolders (it may lack some; it may not add any)."""

    kind: Literal["image_folder"] = "image_folder"
    image_size: tuple[Side, Side] = (64, 64)
    color_mode: Literal["grayscale", "rgb", "rgba"] = "rgb"

    @property
    def channels(self) -> int:
        return {"grayscale": 1, "rgb": 3, "rgba": 4}[self.color_mode]


class Csv(_Files):
    """A .csv file or a folder of *.csv files (sorted; the same header in each). `target` is
    one column; `features` the input columns in order (None: every other column, in header
    order). Values are numbers; targets are float32 ("targets") or whole class ids >= 0
    ("classes")."""

    kind: Literal["csv"] = "csv"
    target: Name
    features: tuple[Name, ...] | None = Field(default=None, min_length=1)
    task: Task = "targets"

    @model_validator(mode="after")
    def _columns(self) -> Csv:
        if self.features is not None:
            if len(set(self.features)) != len(self.features):
                raise ValueError(f"`features` lists a column twice. Received: "
                                 f"features={list(self.features)}")
            if self.target in self.features:
                raise ValueError(f"The target column `{self.target}` cannot also be a "
                                 f"feature. Received: features={list(self.features)}")
        return self


class Feature(Frozen):
    """One fixed-length feature of a tf.train.Example: its dtype and per-example shape."""

    dtype: Literal["float32", "int64"]
    shape: tuple[Annotated[int, Field(ge=1)], ...] = ()

    @model_validator(mode="after")
    def _size(self) -> Feature:
        if math.prod(self.shape) > MAX_FEATURE_VALUES:
            raise ValueError(f"A feature may hold at most {MAX_FEATURE_VALUES} values per "
                             f"example. Received: shape={list(self.shape)}")
        return self


class TFRecord(_Files):
    """A TFRecord file or a folder of *.tfrecord/*.tfrecords files (sorted) of serialized
    tf.train.Example records. `input` and `target` name entries of `features`. Class ids
    ("classes") are one int64 per example; float targets ("targets") any shape, cast to
    float32. Inputs are cast to float32 as they are (not scaled)."""

    kind: Literal["tfrecord"] = "tfrecord"
    features: dict[Name, Feature]
    input: Name
    target: Name
    task: Task = "classes"
    compression: Literal["", "GZIP", "ZLIB"] = ""

    @model_validator(mode="after")
    def _keys(self) -> TFRecord:
        for role in ("input", "target"):
            key = getattr(self, role)
            if key not in self.features:
                raise ValueError(f"`{role}` must be a key of `features` "
                                 f"({', '.join(sorted(self.features)) or 'none'}). "
                                 f"Received: {role}={key!r}")
        if self.input == self.target:
            raise ValueError(f"`input` and `target` must be different features. Received: "
                             f"input=target={self.input!r}")
        target = self.features[self.target]
        if self.task == "classes" and (target.dtype != "int64" or math.prod(target.shape) != 1):
            raise ValueError(f"Class ids must be one int64 value per example: feature "
                             f"`{self.target}` needs dtype int64 and shape [] or [1]. Received: "
                             f"dtype={target.dtype}, shape={list(target.shape)}")
        return self


class Npy(_Files):
    """A local folder holding x.npy and y.npy, read memory-mapped, never unpickled. The
    rules of .npz uploads apply: integer or bool y are class ids, float y are targets;
    uint8 x are scaled to [0, 1]. A `validation_uri` folder holds its own x.npy and y.npy."""

    kind: Literal["npy"] = "npy"

    @model_validator(mode="after")
    def _local(self) -> Npy:
        for field in ("uri", "validation_uri"):
            uri = getattr(self, field)
            if uri is not None and _SCHEME.match(uri) and not uri.lower().startswith("file:"):
                raise ValueError(f"`{field}` of an npy source must be a local folder: its "
                                 f"arrays are memory-mapped. Received: {field}={uri!r}")
        return self


class KerasDataset(Frozen):
    """A Keras dataset, downloaded on demand by the workers."""

    kind: Literal["keras"] = "keras"
    dataset: Literal["mnist", "fashion_mnist", "cifar10", "cifar100"]


FileSource = ImageFolder | Csv | TFRecord | Npy
Source = Annotated[ImageFolder | Csv | TFRecord | Npy | KerasDataset,
                   Field(discriminator="kind")]
SourceAdapter: TypeAdapter[Source] = TypeAdapter(Source)


class Registered(Frozen):
    """What registration found: the example counts (after the split), the input shape and
    the task, the class names of an image folder (in id order), the fingerprint of the
    files as listed before reading, and the elements' shapes and dtypes
    ({"x": {"shape": [...], "dtype": "float32"}, "y": {...}})."""

    train_examples: int
    val_examples: int
    input_shape: tuple[int, ...]
    task: Task
    num_classes: int | None
    target_shape: tuple[int, ...]
    classes: tuple[str, ...] = ()
    fingerprint: str
    element_spec: dict[str, Any]

    @classmethod
    def of(cls, train: int, val: int, input_shape: Sequence[int], head: Head,
           fingerprint: str, classes: tuple[str, ...] = ()) -> Registered:
        """The record for these counts, inputs (float32) and head (int64 class ids or
        float32 targets)."""
        y = "int64" if head.kind == "classes" else "float32"
        shape = tuple(int(d) for d in input_shape)
        return cls(train_examples=train, val_examples=val, input_shape=shape, task=head.kind,
                   num_classes=head.num_classes, target_shape=head.target_shape,
                   classes=classes, fingerprint=fingerprint,
                   element_spec={"x": {"shape": list(shape), "dtype": "float32"},
                                 "y": {"shape": list(head.target_shape), "dtype": y}})

    @property
    def head(self) -> Head:
        if self.task == "classes":
            assert self.num_classes is not None
            return Head.classes(self.num_classes)
        return Head.targets(self.target_shape)


# --- roots -------------------------------------------------------------------------------


def _scheme(uri: str) -> str | None:
    """The lower-cased scheme of a remote uri ("gs"), None for a local path or file://."""
    match = _SCHEME.match(uri)
    if match is None or match.group(1).lower() == "file":
        return None
    return match.group(1).lower()


def _file_url_path(uri: str) -> str:
    """The path of a file:// url (empty host or localhost only); other strings as they are."""
    if not uri.lower().startswith("file://"):
        return uri
    rest = uri[len("file://"):]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost"):]
    return rest


def _remote_normal(uri: str) -> str:
    """A remote uri with its scheme lower-cased (the rest is case-sensitive)."""
    match = _SCHEME.match(uri)
    assert match is not None
    return f"{match.group(1).lower()}://{uri[match.end():]}"


def _local_normal(path: str) -> str:
    # normpath keeps a leading "//" (POSIX leaves its meaning open); one "/" is what we mean.
    normal = os.path.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal


def parse_roots(raw: str | Sequence[str] | None) -> tuple[str, ...]:
    """The roots data references may read from, as the operator set them in
    LRSEARCH_DATA_ROOTS: a JSON list of strings, or a comma-separated list. Blanks are
    dropped, duplicates kept once; local roots (paths or file:// urls) become absolute and
    normalised; remote roots (gs://bucket/x) are kept with one trailing "/". Raises
    DatasetError (field LRSEARCH_DATA_ROOTS) for a malformed value."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except ValueError as e:
                raise DatasetError(f"{ROOTS_SETTING} must be a JSON list of folders or a "
                                   f"comma-separated list. Received: {raw!r} ({e})",
                                   field=ROOTS_SETTING) from None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise DatasetError(f"{ROOTS_SETTING} must be a JSON list of strings. "
                                   f"Received: {raw!r}", field=ROOTS_SETTING)
        else:
            items = text.split(",")
    else:
        items = list(raw)
    roots: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise DatasetError(f"{ROOTS_SETTING} must list folders as strings. Received: "
                               f"{item!r}", field=ROOTS_SETTING)
        item = item.strip()
        if not item:
            continue
        if "\x00" in item:
            raise DatasetError(f"{ROOTS_SETTING} lists a root with a NUL character: {item!r}",
                               field=ROOTS_SETTING)
        if _scheme(item) is not None:
            root = _remote_normal(item)
            match = _SCHEME.match(root)
            assert match is not None
            if any(part in (".", "..") for part in root[match.end():].split("/")):
                raise DatasetError(f"{ROOTS_SETTING} lists a remote root with a '.' or '..' "
                                   f"segment: {item!r}; write it without them",
                                   field=ROOTS_SETTING)
            root = root.rstrip("/") + "/"
        else:
            root = _local_normal(os.path.abspath(os.path.expanduser(_file_url_path(item))))
        if root not in roots:
            roots.append(root)
    return tuple(roots)


def _local_roots(roots: Sequence[str]) -> list[str]:
    return [r for r in roots if _scheme(r) is None]


def _under(path: str, root: str) -> bool:
    """Whether `path` is `root` or lies below it (lexically; both normalised)."""
    base = root.rstrip("/")
    return path == base or path.startswith(base + "/")


def _roots_text(roots: Sequence[str]) -> str:
    return ", ".join(roots) if roots else "none"


TENANT_PLACEHOLDER = "{tenant}"


def apart_from(source: Source, folder: str | os.PathLike[str], what: str) -> None:
    """Refuse a local URI that overlaps `folder` (lies in it, is it, or contains it): the
    service's own data directory holds other tenants' uploads and its database, and a root
    that contains it must not open it to references."""
    base = os.path.realpath(folder)
    for field in ("uri", "validation_uri"):
        uri = getattr(source, field, None)
        if not uri or _scheme(uri) not in (None, "file"):
            continue
        real = os.path.realpath(_file_url_path(uri) if _scheme(uri) == "file" else uri)
        if _under(real, base) or _under(base, real):
            raise DatasetError(f"Argument `source.{field}` overlaps {what}, which dataset "
                               f"references may not read. Received: {field}={uri!r}",
                               field=f"source.{field}")


def tenant_roots(roots: Sequence[str], tenant: str) -> tuple[str, ...]:
    """The roots one tenant may read: `{tenant}` in a root becomes the tenant's name (tenant
    names are plain identifiers), so `/data/{tenant}` gives each tenant its own folder; a
    root without it is shared by every tenant."""
    return tuple(root.replace(TENANT_PLACEHOLDER, tenant) for root in roots)


def check_uri(uri: str, roots: Sequence[str], *, field: str = "source.uri") -> str:
    """The uri normalised, once it is known to lie under one of `roots` (string-level: no
    file is looked at). A local uri is an absolute path or a file:// url, normalised with
    os.path.normpath; a ".." segment in the given uri is refused outright. A remote uri
    (scheme://...) must start with a remote root and hold no "." or ".." segment. Raises
    DatasetError naming `field`, the uri and LRSEARCH_DATA_ROOTS."""
    roots = parse_roots(roots)
    if not roots:
        raise DatasetError(f"Data references are off on this server: the operator has not "
                           f"set {ROOTS_SETTING} (the folders datasets may be read from). "
                           f"Received: {field}={uri!r}", field=field)
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_LENGTH or "\x00" in uri:
        raise DatasetError(f"Argument `{field}` must be a path or url of 1 to "
                           f"{MAX_URI_LENGTH} characters without NUL. Received: "
                           f"{field}={uri!r}", field=field)
    where = f"the roots in {ROOTS_SETTING} ({_roots_text(roots)})"
    scheme = _scheme(uri)
    if scheme is not None:
        normal = _remote_normal(uri)
        rest = normal[len(scheme) + 3:]
        if any(part in (".", "..") for part in rest.split("/")):
            raise DatasetError(f"Argument `{field}` may not hold '.' or '..' segments; it must "
                               f"lie under one of {where}. Received: {field}={uri!r}",
                               field=field)
        normal = normal.rstrip("/")
        if not any((normal + "/").startswith(root) for root in roots if _scheme(root)):
            raise DatasetError(f"Argument `{field}` must lie under one of {where}. Received: "
                               f"{field}={uri!r}", field=field)
        return normal
    path = _file_url_path(uri)
    if not os.path.isabs(path):
        raise DatasetError(f"Argument `{field}` must be an absolute path (or a file:// url) "
                           f"under one of {where}. Received: {field}={uri!r}", field=field)
    if ".." in path.split("/"):
        raise DatasetError(f"Argument `{field}` may not hold '..' segments; it must lie under "
                           f"one of {where}. Received: {field}={uri!r}", field=field)
    normal = _local_normal(path)
    if not any(_under(normal, root) for root in _local_roots(roots)):
        raise DatasetError(f"Argument `{field}` must lie under one of {where}. Received: "
                           f"{field}={uri!r}", field=field)
    return normal


def visible(uri: str, roots: Sequence[str]) -> bool:
    """True when `uri` is local and the root it lies under exists on this machine, so the
    caller can check the files themselves now (`check_source(..., deep=True)`). Never
    raises: a uri `check_uri` refuses is not visible."""
    try:
        normal = check_uri(uri, roots)
    except DatasetError:
        return False
    if _scheme(normal) is not None:
        return False
    return any(_under(normal, root) and os.path.isdir(root)
               for root in _local_roots(parse_roots(roots)))


def resolve_local(path: str, roots: Sequence[str], *, field: str = "source.uri",
                  shown: str | None = None) -> str:
    """The real path of a local `path` (symlinks followed), which must lie under the real
    path of a root: a symlink leading out of the roots is refused. `shown` is how the error
    names the path (e.g. relative to the uri); by default the path itself."""
    real = os.path.realpath(path)
    for root in _local_roots(parse_roots(roots)):
        if _under(real, os.path.realpath(root)):
            return real
    name = path if shown is None else shown
    raise DatasetError(f"`{name}` ({field}) leads outside the roots in {ROOTS_SETTING} "
                       f"({_roots_text(parse_roots(roots))}) through a symlink; only files "
                       "under the roots can be read. Remove the link or copy the data in",
                       field=field)


def _must_exist(source: FileSource, uri: str, field: str, roots: Sequence[str]) -> None:
    real = resolve_local(uri, roots, field=field)
    if not os.path.exists(real):
        raise DatasetError(f"Argument `{field}` does not exist: {uri}", field=field)
    folder_only = isinstance(source, ImageFolder | Npy)
    if folder_only and not os.path.isdir(real):
        raise DatasetError(f"Argument `{field}` is not a folder: {uri}", field=field)
    if not os.path.isdir(real) and not os.path.isfile(real):
        raise DatasetError(f"Argument `{field}` is neither a regular file nor a folder: {uri}",
                           field=field)


def check_source(source: Source, roots: Sequence[str], *, deep: bool) -> Source:
    """`source` with its uri and validation_uri normalised by `check_uri`. With `deep`, local
    uris are also resolved (`resolve_local`) and must exist (a folder for image folders and
    npy; a file or a folder otherwise); remote ones are left to registration. A Keras
    dataset has no uri and comes back unchanged."""
    if isinstance(source, KerasDataset):
        return source
    uri = check_uri(source.uri, roots, field="source.uri")
    val = None
    if source.validation_uri is not None:
        val = check_uri(source.validation_uri, roots, field="source.validation_uri")
    if deep:
        for field, value in (("source.uri", uri), ("source.validation_uri", val)):
            if value is not None and _scheme(value) is None:
                _must_exist(source, value, field, roots)
    return source.model_copy(update={"uri": uri, "validation_uri": val})


# --- the split rule ----------------------------------------------------------------------


def val_count(n: int, val_fraction: float) -> int:
    """How many of `n` elements the split rule holds out: floor(n * val_fraction), which
    must be at least 1 and leave at least 1 for training."""
    count = math.floor(n * val_fraction)
    if not 1 <= count < n:
        raise DatasetError(f"`val_fraction`={val_fraction!r} of {n} examples holds out "
                           f"{count}; at least 1 must be held out and at least 1 left for "
                           "training. Choose another val_fraction, or give a validation_uri",
                           field="source.val_fraction")
    return count


def val_mask(n: int, val_fraction: float) -> np.ndarray:
    """Which of `n` elements (in listing order) are validation elements: element i is when
    floor((i + 1) * f) > floor(i * f), spreading floor(n * f) of them evenly (computed in
    float64; streams compute the same predicate in TensorFlow). Raises like `val_count`."""
    val_count(n, val_fraction)
    i = np.arange(n, dtype=np.float64)
    return np.floor((i + 1) * val_fraction) > np.floor(i * val_fraction)


# --- listing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One file a source reads: `path` to open (a real local path, or a remote uri), `rel`
    its name relative to the uri it was found under (what messages show), its size and
    modification time, and for image folders the class id (else None)."""

    path: str
    rel: str
    size: int
    mtime_ns: int
    label: int | None = None


@dataclass(frozen=True)
class Listing:
    """What a source reads: `train` under the uri and `val` under the validation_uri (empty
    without one), each in the order the split rule counts; image folders' `classes` are the
    class names of the uri in id order."""

    train: tuple[FileEntry, ...]
    val: tuple[FileEntry, ...]
    classes: tuple[str, ...] = ()


def _require_utf8(rel: str, field: str) -> None:
    """File and folder names become class names, messages and JSON: they must be text.
    Python hands undecodable bytes over as surrogates, which no response or database
    column can carry."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
        raise DatasetError(f"`{shown}` ({field}) has a name that is not UTF-8 text; rename "
                           "it", field=field) from None


class _Local:
    """Listing a local folder: every folder and file is resolved against the roots first."""

    def __init__(self, roots: Sequence[str], field: str) -> None:
        self.roots, self.field = roots, field
        self.seen: set[str] = set()  # real folders listed, to stop symlink loops

    def resolve(self, path: str, rel: str) -> str:
        return resolve_local(path, self.roots, field=self.field, shown=rel or ".")

    def entries(self, folder: str, rel: str) -> list[tuple[str, str, bool]]:
        """(name, real path, is a folder) of the regular files and folders in `folder`,
        sorted by name, hidden names skipped; other things (sockets, fifos, devices, broken
        links) are skipped: they are never opened."""
        real = self.resolve(folder, rel)
        if real in self.seen:
            raise DatasetError(f"`{rel}` ({self.field}) leads back to a folder already "
                               "listed (a symlink loop); remove the link", field=self.field)
        self.seen.add(real)
        out = []
        try:
            with os.scandir(real) as it:
                names = sorted(e.name for e in it if not e.name.startswith("."))
        except OSError as e:
            raise DatasetError(f"`{rel or '.'}` ({self.field}) cannot be listed: "
                               f"{e.strerror or e}", field=self.field) from None
        for name in names:
            path = os.path.join(real, name)
            child = f"{rel}/{name}" if rel else name
            _require_utf8(child, self.field)
            if os.path.isdir(path):
                out.append((name, path, True))
            elif os.path.isfile(path):
                out.append((name, self.resolve(path, child), False))
        return out

    def stat(self, path: str, rel: str) -> tuple[int, int]:
        try:
            st = os.stat(path)
        except OSError as e:
            raise DatasetError(f"`{rel}` ({self.field}) cannot be read: {e.strerror or e}",
                               field=self.field) from None
        return st.st_size, st.st_mtime_ns

    def is_dir(self, path: str, rel: str) -> bool:
        return os.path.isdir(self.resolve(path, rel))

    def is_file(self, path: str, rel: str) -> bool:
        return os.path.isfile(self.resolve(path, rel))


class _Remote:
    """Listing a remote prefix through tf.io.gfile (TensorFlow's file systems); its errors
    become DatasetErrors naming the path relative to the uri."""

    def __init__(self, field: str) -> None:
        import tensorflow as tf

        self.gfile, self.errors, self.field = tf.io.gfile, tf.errors, field

    def _fail(self, rel: str, error: Exception) -> DatasetError:
        reason = getattr(error, "message", None) or str(error)
        return DatasetError(f"`{rel or '.'}` ({self.field}) cannot be read: "
                            f"{reason.splitlines()[0] if reason else type(error).__name__}",
                            field=self.field)

    def entries(self, folder: str, rel: str) -> list[tuple[str, str, bool]]:
        out = []
        try:
            for raw in sorted(self.gfile.listdir(folder)):
                name = raw.rstrip("/")
                if not name or name.startswith("."):
                    continue
                path = folder.rstrip("/") + "/" + name
                out.append((name, path, bool(self.gfile.isdir(path))))
        except self.errors.OpError as e:
            raise self._fail(rel, e) from None
        return out

    def stat(self, path: str, rel: str) -> tuple[int, int]:
        try:
            st = self.gfile.stat(path)
        except self.errors.OpError as e:
            raise self._fail(rel, e) from None
        return int(st.length), int(st.mtime_nsec)

    def is_dir(self, path: str, rel: str) -> bool:
        try:
            return bool(self.gfile.isdir(path))
        except self.errors.OpError as e:
            raise self._fail(rel, e) from None

    def is_file(self, path: str, rel: str) -> bool:
        try:
            return bool(self.gfile.exists(path)) and not self.gfile.isdir(path)
        except self.errors.OpError as e:
            raise self._fail(rel, e) from None


_FS = _Local | _Remote


def _fs(uri: str, roots: Sequence[str], field: str) -> _FS:
    return _Remote(field) if _scheme(uri) is not None else _Local(roots, field)


MAX_DEPTH = 32  # folders nested deeper are refused (a clear error, not a RecursionError)


def _walk(fs: _FS, folder: str, rel: str, extensions: tuple[str, ...], depth: int = 0
          ) -> Iterator[tuple[str, str]]:
    """(path, relative name) of every file under `folder` with one of `extensions` (any
    case), depth first in name order: the sorted order of relative paths."""
    if depth > MAX_DEPTH:
        raise DatasetError(f"`{rel}` is nested more than {MAX_DEPTH} folders deep; flatten the "
                           "dataset's folders", field="source.uri")
    for name, path, is_dir in fs.entries(folder, rel):
        child = f"{rel}/{name}" if rel else name
        if is_dir:
            yield from _walk(fs, path, child, extensions, depth + 1)
        elif name.lower().endswith(extensions):
            yield path, child


def _entry(fs: _FS, path: str, rel: str, label: int | None = None) -> FileEntry:
    size, mtime = fs.stat(path, rel)
    return FileEntry(path, rel, size, mtime, label)


def _image_classes(fs: _FS, uri: str) -> list[tuple[str, str]]:
    """(class name, folder) of the class subfolders of an image folder, sorted by name."""
    return [(name, path) for name, path, is_dir in fs.entries(uri, "") if is_dir]


def _list_images(uri: str, roots: Sequence[str], field: str, classes: Sequence[str] | None
                 ) -> tuple[tuple[FileEntry, ...], tuple[str, ...]]:
    """The images of an image folder sorted by (class, relative path), with class ids: the
    uri's own classes, or for a validation folder the training `classes` (a class of its
    own is refused)."""
    fs = _fs(uri, roots, field)
    found = _image_classes(fs, uri)
    names = tuple(name for name, _ in found)
    if classes is None:
        classes = names
    else:
        extra = [name for name in names if name not in classes]
        if extra:
            raise DatasetError(f"`{field}` has class folders the training folder lacks: "
                               f"{', '.join(extra)}. Training classes: "
                               f"{', '.join(classes)}", field=field)
    ids = {name: i for i, name in enumerate(classes)}
    files = [_entry(fs, path, rel, ids[name])
             for name, folder in found
             for path, rel in _walk(fs, folder, name, IMAGE_EXTENSIONS)]
    return tuple(files), tuple(classes)


def _list_files(uri: str, roots: Sequence[str], field: str, extensions: tuple[str, ...]
                ) -> tuple[FileEntry, ...]:
    """A file (whatever its name), or the files of a folder with one of `extensions`,
    sorted by name (not recursive)."""
    fs = _fs(uri, roots, field)
    base = uri.rstrip("/").rsplit("/", 1)[-1]
    if not fs.is_dir(uri, ""):
        if not fs.is_file(uri, ""):
            raise DatasetError(f"Argument `{field}` does not exist or is not a regular file: "
                               f"{uri}", field=field)
        path = fs.resolve(uri, base) if isinstance(fs, _Local) else uri
        return (_entry(fs, path, base),)
    return tuple(_entry(fs, path, name) for name, path, is_dir in fs.entries(uri, "")
                 if not is_dir and name.lower().endswith(extensions))


def _list_npy(uri: str, roots: Sequence[str], field: str) -> tuple[FileEntry, ...]:
    fs = _fs(uri, roots, field)
    if not fs.is_dir(uri, ""):
        raise DatasetError(f"Argument `{field}` is not a folder holding x.npy and y.npy: "
                           f"{uri}", field=field)
    out = []
    for name in NPY_FILES:
        path = uri.rstrip("/") + "/" + name
        if not fs.is_file(path, name):
            raise DatasetError(f"`{field}` has no regular file `{name}`; put x.npy (inputs) "
                               f"and y.npy (labels) in {uri}", field=field)
        out.append(_entry(fs, fs.resolve(path, name) if isinstance(fs, _Local) else path,
                          name))
    return tuple(out)


def list_files(source: FileSource, roots: Sequence[str]) -> Listing:
    """Every file `source` reads (its uris normalised by `check_uri` first), in the order
    the split rule counts: images by (class name, relative path), CSV and TFRecord files by
    name, then x.npy, y.npy. Every local folder and file is resolved against the roots (a
    symlink leaving them is refused, named relative to its uri); only regular files are
    listed. Counts and contents are registration's business: nothing is opened here."""
    checked = check_source(source, roots, deep=False)
    assert not isinstance(checked, KerasDataset)
    sides = [("source.uri", checked.uri)]
    if checked.validation_uri is not None:
        sides.append(("source.validation_uri", checked.validation_uri))
    if isinstance(checked, ImageFolder):
        train, classes = _list_images(checked.uri, roots, "source.uri", None)
        val: tuple[FileEntry, ...] = ()
        if checked.validation_uri is not None:
            val, _ = _list_images(checked.validation_uri, roots, "source.validation_uri",
                                  classes)
        return Listing(train, val, classes)
    parts = []
    for field, uri in sides:
        if isinstance(checked, Csv):
            parts.append(_list_files(uri, roots, field, CSV_EXTENSIONS))
        elif isinstance(checked, TFRecord):
            parts.append(_list_files(uri, roots, field, TFRECORD_EXTENSIONS))
        else:
            parts.append(_list_npy(uri, roots, field))
    return Listing(parts[0], parts[1] if len(parts) > 1 else ())


def listing_fingerprint(listing: Listing) -> str:
    """sha256 (hex) of the sorted (side, relative path, size, mtime_ns) of every file."""
    rows = sorted([[side, f.rel, f.size, f.mtime_ns]
                   for side, files in (("uri", listing.train), ("validation_uri", listing.val))
                   for f in files])
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def registered_listing(name: str, source: FileSource, registered: Registered,
                       roots: Sequence[str]) -> Listing:
    """The files of a registered reference, listed again before a run reads them; raises
    DatasetChanged when they are not the registered ones (what every loader checks)."""
    listing = list_files(source, roots)
    if listing_fingerprint(listing) != registered.fingerprint:
        raise changed(name)
    return listing


def split_files(source: FileSource, listing: Listing
                ) -> tuple[tuple[FileEntry, ...], tuple[FileEntry, ...]]:
    """(training files, validation files) of a reference whose elements are files (image
    folders): the validation folder's, or the split rule's pick of the uri's files."""
    if source.validation_uri is not None:
        return listing.train, listing.val
    mask = val_mask(len(listing.train), source.val_fraction)
    return (tuple(f for f, v in zip(listing.train, mask, strict=True) if not v),
            tuple(f for f, v in zip(listing.train, mask, strict=True) if v))


def fingerprint(source: Source, roots: Sequence[str]) -> str:
    """A digest of every file the source reads (uri and validation_uri): their names
    relative to the uri, sizes and modification times. Changes when a file is added,
    removed, renamed, or written to. Raises DatasetError for a Keras dataset (no files)."""
    if isinstance(source, KerasDataset):
        raise DatasetError("A Keras dataset has no files to fingerprint", field="source.kind")
    return listing_fingerprint(list_files(source, roots))


# --- CSV headers -------------------------------------------------------------------------

MAX_HEADER_BYTES = 1 << 20


def _open(path: str) -> Any:
    """A binary file object for a local path or a remote uri (tf.io.gfile)."""
    if _scheme(path) is None:
        return open(path, "rb")
    import tensorflow as tf

    return tf.io.gfile.GFile(path, "rb")


def read_header(path: str, shown: str, *, field: str = "source.uri") -> list[str]:
    """The column names of a CSV file (named `shown` in errors): its first line, at most
    MAX_HEADER_BYTES, as UTF-8 (a byte-order mark dropped), names stripped of spaces."""
    line = b""
    with _open(path) as f:
        while b"\n" not in line and len(line) <= MAX_HEADER_BYTES:
            block = f.read(64 * 1024)
            if not block:
                break
            line += block
    line = line.split(b"\n", 1)[0]
    if len(line) > MAX_HEADER_BYTES:
        raise DatasetError(f"`{shown}` has a header line longer than {MAX_HEADER_BYTES} bytes; "
                           "a CSV file starts with one header row naming its columns",
                           field=field)
    try:
        text = line.decode("utf-8-sig").rstrip("\r")
    except UnicodeDecodeError as e:
        raise DatasetError(f"`{shown}` has a header that is not UTF-8 text ({e.reason} at "
                           f"byte {e.start})", field=field) from None
    rows = list(csv.reader([text]))
    names = [name.strip() for name in rows[0]] if rows else []
    if not any(names):
        raise DatasetError(f"`{shown}` has no header row; its first line must name the "
                           "columns", field=field)
    return names


@dataclass(frozen=True)
class CsvColumns:
    """Which columns a Csv source reads: `select` their header positions (ascending, as
    TensorFlow's CsvDataset needs), `features` and `target` their positions within
    `select`; `names` the header."""

    select: tuple[int, ...]
    features: tuple[int, ...]
    target: int
    names: tuple[str, ...]


def csv_columns(source: Csv, header: Sequence[str], shown: str) -> CsvColumns:
    """The columns `source` reads from a file with `header` (named `shown` in errors): the
    target must be a column, and every feature (every other column when not given)."""
    columns = list(header)
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise DatasetError(f"`{shown}` names a column twice in its header: {', '.join(twice)}; "
                           "give every column its own name", field="source.uri")
    if source.target not in columns:
        raise DatasetError(f"Argument `target`={source.target!r} is not a column of "
                           f"`{shown}`. Its columns: {', '.join(columns)}",
                           field="source.target")
    features = source.features or tuple(c for c in columns if c != source.target)
    missing = [f for f in features if f not in columns]
    if missing:
        raise DatasetError(f"Argument `features` names columns `{shown}` lacks: "
                           f"{', '.join(missing)}. Its columns: {', '.join(columns)}",
                           field="source.features")
    if not features:
        raise DatasetError(f"`{shown}` has no column besides the target `{source.target}`; "
                           "a dataset needs at least one feature column",
                           field="source.features")
    select = tuple(sorted({columns.index(c) for c in (*features, source.target)}))
    return CsvColumns(select, tuple(select.index(columns.index(f)) for f in features),
                      select.index(columns.index(source.target)), tuple(columns))
