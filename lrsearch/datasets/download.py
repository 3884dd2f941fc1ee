"""Keras' datasets: where their files live, where they come from, and fetching them on demand.

`KERAS_DATASETS` is the one table of the real files (the names Keras gives them, their
original URLs and SHA-256 digests). `locate` finds a dataset's files in the data directory or
in Keras' own cache, the way the loaders in keras_cache.py read them. `ensure` downloads what
is missing into `<data_dir>/datasets/`: once per machine (an exclusive lock per file), written
atomically (a temporary file in the same folder, hashed while streaming, bounded in size,
fsynced, verified, then renamed), so a reader never sees a partial or unverified file.

No TensorFlow and no third-party HTTP client: urllib is enough for a few large GETs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO

from lrsearch.errors import DatasetError

log = logging.getLogger(__name__)

DOWNLOADS_SETTING = "LRSEARCH_DOWNLOADS"
MIRROR_SETTING = "LRSEARCH_DATA_MIRROR"
MIRROR_DIGESTS_SETTING = "LRSEARCH_DATA_MIRROR_DIGESTS"
DATA_DIR_SETTING = "LRSEARCH_DATA_DIR"

KERAS_BUCKET = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
TORONTO = "https://www.cs.toronto.edu/~kriz/"
CHUNK = 1 << 20  # bytes read per step while streaming a download

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RemoteFile:
    """One file Keras downloads: `name` is its file name (the last part of its URL, and what
    a mirror serves at `<mirror>/<name>`); it is kept as `<folder>/<name>` under `datasets/`
    (folder "" for the top level); `sha256` is the digest of the original file."""

    name: str
    url: str
    sha256: str
    folder: str = ""

    @property
    def relative(self) -> str:
        """Where the file goes, relative to a `datasets/` folder."""
        return f"{self.folder}/{self.name}" if self.folder else self.name


@dataclass(frozen=True)
class KerasFiles:
    """A dataset's files. `needed` is how messages name what the dataset needs (one file, or
    the folder its files go in); `origin` is where to fetch it from by hand."""

    dataset: str
    needed: str
    files: tuple[RemoteFile, ...]

    @property
    def origin(self) -> str:
        """The URL of the single file, or the folder URL all the files are under."""
        if len(self.files) == 1:
            return self.files[0].url
        return self.files[0].url.rsplit("/", 1)[0] + "/"


def _fashion(name: str, sha256: str) -> RemoteFile:
    # Keras keeps Fashion-MNIST in datasets/fashion-mnist/; the bucket has the files at its top.
    return RemoteFile(name, KERAS_BUCKET + name, sha256, folder="fashion-mnist")


# The digests of mnist.npz, cifar-10-python.tar.gz and cifar-100-python.tar.gz are the
# `file_hash` values Keras' own loaders check (keras/src/datasets/{mnist,cifar10,cifar100}.py).
# Keras checks no digest for Fashion-MNIST; these are the published SHA-256 digests of
# Zalando's files, which the Keras bucket serves byte for byte (same sizes: 26421880, 29515,
# 4422102 and 5148 bytes).
KERAS_DATASETS: Mapping[str, KerasFiles] = MappingProxyType({
    "mnist": KerasFiles("mnist", "mnist.npz", (RemoteFile(
        "mnist.npz", KERAS_BUCKET + "mnist.npz",
        "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"),)),
    "fashion_mnist": KerasFiles("fashion_mnist", "fashion-mnist", (
        _fashion("train-labels-idx1-ubyte.gz",
                 "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        _fashion("train-images-idx3-ubyte.gz",
                 "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        _fashion("t10k-labels-idx1-ubyte.gz",
                 "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        _fashion("t10k-images-idx3-ubyte.gz",
                 "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    )),
    "cifar10": KerasFiles("cifar10", "cifar-10-python.tar.gz", (RemoteFile(
        "cifar-10-python.tar.gz", TORONTO + "cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),)),
    "cifar100": KerasFiles("cifar100", "cifar-100-python.tar.gz", (RemoteFile(
        "cifar-100-python.tar.gz", TORONTO + "cifar-100-python.tar.gz",
        "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"),)),
})
# Datasets built from another one's files.
ALIASES: Mapping[str, str] = MappingProxyType({"cifar10_cats_dogs": "cifar10"})
# What the "missing file" messages point at: needed name -> URL.
ORIGINS: Mapping[str, str] = MappingProxyType(
    {spec.needed: spec.origin for spec in KERAS_DATASETS.values()})
FILE_NAMES = frozenset(f.name for spec in KERAS_DATASETS.values() for f in spec.files)

# The Keras batches, once extracted: (folder candidates, the files that must all be in it).
CIFAR10_FOLDERS = ("cifar-10-batches-py", "cifar-10-batches-py_extracted/cifar-10-batches-py",
                   "cifar-10-batches-py-target/cifar-10-batches-py")
CIFAR10_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR100_FOLDERS = ("cifar-100-python", "cifar-100-python_extracted/cifar-100-python",
                    "cifar-100-python-target/cifar-100-python")
CIFAR100_BATCHES = ("train", "test")


def keras_home() -> Path:
    """Keras' own folder ($KERAS_HOME, default ~/.keras); its cache is `datasets/` in it."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


def search_dirs(data_dir: Path | None) -> list[Path]:
    """Where dataset files are looked for, in order: the data directory, its `datasets/`
    folder (where downloads go), then Keras' cache."""
    dirs = [data_dir, data_dir / "datasets"] if data_dir is not None else []
    return [*dirs, keras_home() / "datasets"]


def find(data_dir: Path | None, *candidates: str) -> Path | None:
    """The first existing path among candidates (relative names) in the search dirs."""
    for folder in search_dirs(data_dir):
        for name in candidates:
            if (folder / name).exists():
                return folder / name
    return None


def find_folder(data_dir: Path | None, candidates: tuple[str, ...],
                names: tuple[str, ...]) -> Path | None:
    """The first folder among candidates in the search dirs that holds every one of `names`
    (an incomplete folder is skipped, so a complete one further on still counts)."""
    for folder in search_dirs(data_dir):
        for candidate in candidates:
            path = folder / candidate
            if all((path / name).is_file() for name in names):
                return path
    return None


def spec(dataset: str) -> KerasFiles:
    """The table entry of a Keras dataset (or of one built from its files)."""
    name = ALIASES.get(dataset, dataset)
    if name not in KERAS_DATASETS:
        known = ", ".join([*KERAS_DATASETS, *ALIASES])
        raise DatasetError(f"`{dataset}` is not a Keras dataset that can be downloaded. "
                           f"Received: dataset={dataset!r}; choose one of: {known}.",
                           field="dataset")
    return KERAS_DATASETS[name]


def locate(dataset: str, data_dir: Path | None) -> list[Path] | None:
    """The files or folder the loader of `dataset` reads, when they are all present in the
    search dirs (see `search_dirs`); None when something is missing. Nothing is read."""
    entry = spec(dataset)
    found: Path | None
    if entry.dataset == "fashion_mnist":
        names = tuple(f.name for f in entry.files)
        found = find_folder(data_dir, ("fashion-mnist",), names)
        return None if found is None else [found / name for name in names]
    if entry.dataset == "cifar10":
        found = find_folder(data_dir, CIFAR10_FOLDERS, CIFAR10_BATCHES)
    elif entry.dataset == "cifar100":
        found = find_folder(data_dir, CIFAR100_FOLDERS, CIFAR100_BATCHES)
    else:
        found = None
    if found is None:
        found = find(data_dir, entry.files[0].relative)
    return None if found is None else [found]


@dataclass(frozen=True)
class DownloadSettings:
    """How `ensure` may fetch files.

    allow: download missing files at all (LRSEARCH_DOWNLOADS); when False they must be put in
    `<data_dir>/datasets/` by hand. mirror: a base http(s) URL to fetch `<mirror>/<file name>`
    from instead of the original URLs (LRSEARCH_DATA_MIRROR). mirror_digests: file name ->
    SHA-256 for mirror files that are not byte-for-byte the originals
    (LRSEARCH_DATA_MIRROR_DIGESTS); every other file is checked against the real digests, so
    it needs a mirror. timeout: seconds a connection may wait for the server (connecting, or
    between two reads). max_bytes: the most one file may have.
    """

    allow: bool = True
    mirror: str | None = None
    mirror_digests: Mapping[str, str] = field(default_factory=dict, hash=False)
    timeout: float = 60.0
    total_timeout: float = 3600.0  # the whole download of one file, in seconds
    max_bytes: int = 1_000_000_000

    def __post_init__(self) -> None:
        if self.mirror is not None:
            object.__setattr__(self, "mirror", check_url(self.mirror, MIRROR_SETTING))
        digests = {}
        for name, digest in dict(self.mirror_digests).items():
            if name not in FILE_NAMES:
                raise DatasetError(
                    f"{MIRROR_DIGESTS_SETTING} names `{name}`, which is not a dataset file. "
                    f"Use the file names: {', '.join(sorted(FILE_NAMES))}.",
                    field="mirror_digests")
            value = str(digest).strip().lower()
            if not _SHA256.fullmatch(value):
                raise DatasetError(
                    f"{MIRROR_DIGESTS_SETTING} must map each file name to a SHA-256 digest "
                    f"(64 hex digits). Received: {name}={digest!r}", field="mirror_digests")
            digests[name] = value
        if digests and self.mirror is None:
            raise DatasetError(
                f"{MIRROR_DIGESTS_SETTING} is set but {MIRROR_SETTING} is not: the original "
                "files are always checked against their real digests. Set the mirror, or "
                f"unset {MIRROR_DIGESTS_SETTING}.", field="mirror_digests")
        object.__setattr__(self, "mirror_digests", MappingProxyType(digests))
        if isinstance(self.timeout, bool) or not self.timeout > 0:
            raise DatasetError(f"Argument `timeout` must be > 0 seconds. Received: "
                               f"timeout={self.timeout!r}", field="timeout")
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int) \
                or self.max_bytes < 1:
            raise DatasetError(f"Argument `max_bytes` must be an integer >= 1. Received: "
                               f"max_bytes={self.max_bytes!r}", field="max_bytes")

    def url(self, file: RemoteFile) -> str:
        """Where `file` is fetched from."""
        if self.mirror is None:
            return file.url
        return f"{self.mirror.rstrip('/')}/{urllib.parse.quote(file.name)}"

    def digest(self, file: RemoteFile) -> str:
        """The SHA-256 the downloaded `file` must have."""
        return self.mirror_digests.get(file.name, file.sha256)


def check_url(url: str, setting: str) -> str:
    """`url` when it is an http(s) URL with a host; else DatasetError naming `setting`."""
    parts = urllib.parse.urlsplit(str(url).strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Name only the scheme: the rest of a file: URL would be a path on this machine.
        raise DatasetError(f"{setting} must be an http:// or https:// URL with a host. "
                           f"Received a URL with scheme {parts.scheme or 'none'!r}.",
                           field="mirror")
    return urllib.parse.urlunsplit(parts)


def shown(url: str) -> str:
    """`url` as messages and logs show it: without a user name, password or query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def ensure(dataset: str, data_dir: Path, settings: DownloadSettings) -> list[Path]:
    """Make sure every file `dataset` needs is on this machine, and return their paths.

    Files already found (see `locate`: the data directory, its `datasets/` folder, Keras'
    cache) are used as they are and nothing is fetched. Otherwise each missing file is
    downloaded into `<data_dir>/datasets/` under an exclusive lock
    (`<data_dir>/datasets/.<file name>.lock`, left in place), checked again once the lock is
    held, streamed to a temporary file in the destination folder while hashing, bounded by
    `settings.max_bytes`, fsynced, verified against its SHA-256 and renamed into place. Any
    failure (HTTP error, broken or timed-out connection, too many bytes, wrong digest) removes
    the temporary file and raises DatasetError naming the dataset, the file, the cause and the
    settings to change. With `settings.allow` False a missing file raises DatasetError saying
    how to provide it. Lock files stay: removing one while another process waits on it would
    let a third take a second lock on a new file of the same name.
    """
    entry = spec(dataset)
    found = locate(dataset, data_dir)
    if found is not None:
        return found
    target = Path(data_dir) / "datasets"
    missing = [f for f in entry.files if not (target / f.relative).is_file()]
    if missing and not settings.allow:
        raise _downloads_off(dataset, missing)
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for file in entry.files:
        destination = target / file.relative
        if file in missing:
            with _locked(target / f".{file.name}.lock"):
                # Another process may have fetched it while this one waited for the lock.
                if not destination.is_file():
                    _download(dataset, file, destination, settings)
        paths.append(destination)
    return paths


def _downloads_off(dataset: str, missing: list[RemoteFile]) -> DatasetError:
    files = ", ".join(f"`{f.relative}` (from {f.url})" for f in missing)
    return DatasetError(
        f"Dataset `{dataset}` needs {files}, and downloads are off "
        f"({DOWNLOADS_SETTING}=false). Put the file(s) in the `datasets/` folder of the data "
        f"directory ({DATA_DIR_SETTING}) on every worker, or allow downloads "
        f"({DOWNLOADS_SETTING}=true).", field="dataset")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if needed). flock excludes other processes
    and other open descriptions in this one, so threads are excluded too."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


class _Failed(Exception):
    """Why a download failed, in words fit for the user (no local paths)."""


class _HttpOnly(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) URLs only (urllib would also follow one to ftp://)."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: http.client.HTTPMessage,
                         newurl: str) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise _Failed(f"the server redirected to a URL that is not http(s): "
                          f"{shown(newurl)}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(dataset: str, file: RemoteFile, destination: Path,
              settings: DownloadSettings) -> None:
    url = settings.url(file)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DatasetError(f"Dataset `{dataset}`: `{file.name}` can only be downloaded over "
                           f"http(s). Received: {shown(url)}", field="dataset")
    folder = destination.parent
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f".{file.name}.*.part"):
        # Left by a process killed mid-download; this one holds the lock, so none is live.
        stale.unlink(missing_ok=True)
    log.info("Downloading %s for dataset %s (%s)", file.name, dataset, shown(url))
    fd, temporary = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            size, digest = _stream(url, out, settings)
            out.flush()
            os.fsync(out.fileno())
        expected = settings.digest(file)
        if digest != expected:
            raise _Failed(f"its SHA-256 is {digest}, expected {expected}")
        os.replace(temporary, destination)
        _fsync_folder(folder)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, Exception):
            raise _failure(dataset, file, url, settings, exc) from exc
        raise
    log.info("Downloaded %s for dataset %s: %d bytes, SHA-256 verified", file.name, dataset,
             size)


def _stream(url: str, out: IO[bytes], settings: DownloadSettings) -> tuple[int, str]:
    """GET `url` into `out`; returns (bytes written, SHA-256 hex)."""
    opener = urllib.request.build_opener(_HttpOnly())
    request = urllib.request.Request(url, headers={"User-Agent": "lrsearch"})
    digest = hashlib.sha256()
    size = 0
    with opener.open(request, timeout=settings.timeout) as response:
        announced = response.headers.get("Content-Length")
        length = int(announced) if announced and announced.strip().isdigit() else None
        if length is not None and length > settings.max_bytes:
            raise _Failed(f"the server announced {length} bytes, more than "
                          f"max_bytes={settings.max_bytes}")
        deadline = time.monotonic() + settings.total_timeout
        while chunk := response.read(CHUNK):
            if time.monotonic() > deadline:  # a server trickling bytes holds the lock
                raise _Failed(f"the download took longer than total_timeout="
                              f"{settings.total_timeout:g} s")
            size += len(chunk)
            if size > settings.max_bytes:
                raise _Failed(f"it sent more than max_bytes={settings.max_bytes} bytes")
            digest.update(chunk)
            out.write(chunk)
    # http.client ends a read silently when the connection closes early; check the length.
    if length is not None and size != length:
        raise _Failed(f"the connection closed after {size} of {length} bytes")
    return size, digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (a crash right after it must not lose the new name)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cause(exc: BaseException, settings: DownloadSettings) -> str:
    """The reason, in words; never a local path (OSError's text would include one)."""
    if isinstance(exc, _Failed):
        return str(exc)
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return _cause(reason, settings)
        text = _cause(reason, settings) if isinstance(reason, BaseException) else reason
        return f"the server could not be reached ({text})"
    if isinstance(exc, TimeoutError):
        return f"the server sent nothing for {settings.timeout:g} s (timeout)"
    if isinstance(exc, http.client.HTTPException):
        return f"the connection broke ({type(exc).__name__})"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or 'error ' + str(exc.errno)}"
    return f"{type(exc).__name__}: {exc}"


def _failure(dataset: str, file: RemoteFile, url: str, settings: DownloadSettings,
             exc: BaseException) -> DatasetError:
    digest_hint = (f" or {MIRROR_DIGESTS_SETTING} (the digests of a mirror's own files)"
                   if settings.mirror is not None else "")
    return DatasetError(
        f"Dataset `{dataset}`: downloading `{file.name}` from {shown(url)} failed: "
        f"{_cause(exc, settings)}. Nothing was kept. Try again, set {MIRROR_SETTING} to a "
        f"reachable copy (files at <mirror>/{file.name}){digest_hint}, or set "
        f"{DOWNLOADS_SETTING}=false and put `{file.relative}` in the `datasets/` folder of "
        f"the data directory ({DATA_DIR_SETTING}) on every worker.", field="dataset")
