"""Helpers for tests of Keras datasets: tiny files in Keras' real formats, and a local HTTP
server to download them from.

`write_cifar10_tar` writes a `cifar-10-python.tar.gz` laid out like the original (folder
`cifar-10-batches-py/` with `data_batch_1..5`, `test_batch` and `batches.meta`, pickled dicts).
`serve_folder` serves a folder on 127.0.0.1 and records every request; a request for
`/truncated/<name>` answers with a Content-Length larger than what it sends, then closes.
"""

from __future__ import annotations

import http.server
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CIFAR10_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                  "ship", "truck")
TRUNCATED = "truncated/"  # a path prefix: serve a broken copy


def cifar10_labels(per_batch: int, seed: int) -> dict[str, list[int]]:
    """The labels `write_cifar10_tar(path, per_batch, seed)` writes, batch name -> labels."""
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, 10, per_batch).tolist() for name in CIFAR10_BATCHES}


def write_cifar10_tar(path: Path, per_batch: int = 10, seed: int = 0) -> Path:
    """Write a CIFAR-10 "python version" archive with `per_batch` images in each of the six
    batches: x uint8 (n, 3072) channel-major (red plane = 0, green = 255, blue = the batch
    index, so the channel order can be checked), labels from `cifar10_labels`."""
    labels = cifar10_labels(per_batch, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for index, name in enumerate(CIFAR10_BATCHES):
            data = np.zeros((per_batch, 3072), np.uint8)
            data[:, 1024:2048] = 255
            data[:, 2048:] = index
            _add(tar, f"cifar-10-batches-py/{name}", pickle.dumps(
                {b"batch_label": name.encode(), b"labels": labels[name], b"data": data,
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]}))
        _add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps(
            {b"label_names": [n.encode() for n in CIFAR10_LABELS], b"num_vis": 3072,
             b"num_cases_per_batch": per_batch}))
    return path


def write_cifar100_tar(path: Path, train: int = 20, test: int = 10, seed: int = 0) -> Path:
    """Write a CIFAR-100 "python version" archive: folder `cifar-100-python/` with pickled
    dicts `train` and `test` ({b"data": uint8 (n, 3072), b"fine_labels": 0..99,
    b"coarse_labels": 0..19}) and `meta`. Fine label i is written as (seed + i) % 100 within
    each split, so a reader can check them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, n in (("train", train), ("test", test)):
            fine = [(seed + i) % 100 for i in range(n)]
            data = np.zeros((n, 3072), np.uint8)
            data[:, 2048:] = 255  # blue plane only
            _add(tar, f"cifar-100-python/{name}", pickle.dumps(
                {b"filenames": [f"{i}.png".encode() for i in range(n)], b"batch_label": b"x",
                 b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                 b"data": data}))
        _add(tar, "cifar-100-python/meta", pickle.dumps(
            {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
             b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}))
    return path


def _add(tar: tarfile.TarFile, name: str, raw: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(raw)
    tar.addfile(info, io.BytesIO(raw))


@dataclass
class RequestLog:
    """The paths requested so far (thread-safe); `delay` seconds are waited before each
    answer, so concurrent clients overlap."""

    paths: list[str] = field(default_factory=list)
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str) -> None:
        with self.lock:
            self.paths.append(path)

    def __len__(self) -> int:
        with self.lock:
            return len(self.paths)


@contextmanager
def serve_folder(folder: Path) -> Iterator[tuple[str, RequestLog]]:
    """Serve the files of `folder` over HTTP on 127.0.0.1 (a free port) for the duration of
    the block; yields (base URL without a trailing slash, the request log). Unknown files are
    404. `/truncated/<name>` announces the size of `<name>` but sends half of it and closes
    (so a mirror `<base>/truncated` serves only broken downloads)."""
    requests = RequestLog()
    root = Path(folder)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.add(self.path)
            if requests.delay:
                threading.Event().wait(requests.delay)
            name = self.path.lstrip("/")
            truncated = name.startswith(TRUNCATED)
            name = name.removeprefix(TRUNCATED)
            path = root / name
            if "/" in name or not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body[:len(body) // 2] if truncated else body)
            except ConnectionError:
                return  # the client gave up (a timeout test): nothing to report
            if truncated:
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
