"""Keras datasets downloaded on demand: real file formats served over HTTP from 127.0.0.1."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from lrsearch import datasets
from lrsearch.datasets import download, keras_cache
from lrsearch.datasets.download import DownloadSettings, ensure
from lrsearch.errors import DatasetError
from lrsearch.models import Head
from tests.datasets.keras_files import (
    cifar10_labels,
    serve_folder,
    write_cifar10_tar,
    write_cifar100_tar,
)
from tests.datasets.test_datasets import idx_gz

CIFAR = "cifar-10-python.tar.gz"
LOCK = f".{CIFAR}.lock"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def empty_keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras' cache of this machine must not satisfy a test; nor may a proxy see 127.0.0.1."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def mirror(tmp_path: Path) -> Path:
    """A folder holding a tiny but real cifar-10-python.tar.gz (10 images per batch)."""
    return write_cifar10_tar(tmp_path / "mirror" / CIFAR).parent


def test_the_table_holds_keras_own_urls_and_digests() -> None:
    """mnist, cifar10 and cifar100: the URL and digest Keras' own loader checks, read from
    the installed Keras source; every digest is a SHA-256; keras_cache uses the same table."""
    keras = importlib.metadata.distribution("keras")
    for dataset, module in (("mnist", "mnist"), ("cifar10", "cifar10"),
                            ("cifar100", "cifar100")):
        source = Path(str(keras.locate_file(f"keras/src/datasets/{module}.py"))).read_text()
        [file] = download.KERAS_DATASETS[dataset].files
        assert re.search(rf'file_hash=\(?\s*(#[^\n]*)?\s*"{file.sha256}"', source), dataset
        assert file.url.rsplit("/", 1)[0] + "/" in source and file.name in source
    fashion = download.KERAS_DATASETS["fashion_mnist"]
    assert [f.name for f in fashion.files] == list(keras_cache.FASHION_FILES)
    assert {f.relative for f in fashion.files} == {f"fashion-mnist/{n}"
                                                   for n in keras_cache.FASHION_FILES}
    for entry in download.KERAS_DATASETS.values():
        for file in entry.files:
            assert re.fullmatch(r"[0-9a-f]{64}", file.sha256) and file.url.startswith("https://")
    assert keras_cache.ORIGINS is download.ORIGINS
    assert keras_cache.ORIGINS["fashion-mnist"] == download.KERAS_BUCKET


def test_downloads_once_verifies_and_the_loader_reads_it(tmp_path: Path, mirror: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    data = tmp_path / "data"
    caplog.set_level("INFO", logger=download.__name__)
    with serve_folder(mirror) as (base, requests):
        settings = DownloadSettings(mirror=base, mirror_digests={CIFAR: sha256(mirror / CIFAR)})
        paths = ensure("cifar10", data, settings)
        assert paths == [data / "datasets" / CIFAR]
        assert requests.paths == [f"/{CIFAR}"]
        assert ensure("cifar10", data, settings) == paths  # present now: no request
        assert ensure("cifar10_cats_dogs", data, settings) == paths
        assert len(requests) == 1
    assert sorted(p.name for p in (data / "datasets").iterdir()) == [LOCK, CIFAR]
    assert sha256(paths[0]) == sha256(mirror / CIFAR)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{base}/{CIFAR}" in logged and f"{(mirror / CIFAR).stat().st_size} bytes" in logged
    d = keras_cache.cifar10(data, 0.2, 0)
    assert d.x_train.shape == (50, 32, 32, 3) and d.x_val.shape == (10, 32, 32, 3)
    labels = cifar10_labels(10, 0)
    assert d.y_train.tolist() == [y for i in range(1, 6) for y in labels[f"data_batch_{i}"]]
    assert d.y_val.tolist() == labels["test_batch"] and d.head == Head.classes(10)
    # Channels last: red plane 0, green 255, blue = the batch's index (test_batch is 5).
    assert d.x_val[..., 0].max() == 0.0 and d.x_val[..., 1].min() == 1.0
    assert np.allclose(d.x_val[..., 2], 5 / 255)


def test_concurrent_callers_download_once(tmp_path: Path, mirror: Path) -> None:
    data = tmp_path / "data"
    results: list[list[Path]] = []
    errors: list[BaseException] = []
    with serve_folder(mirror) as (base, requests):
        requests.delay = 0.3  # both callers are inside ensure() while the first downloads
        settings = DownloadSettings(mirror=base, mirror_digests={CIFAR: sha256(mirror / CIFAR)})
        start = threading.Barrier(3)

        def call() -> None:
            start.wait()
            try:
                results.append(ensure("cifar10", data, settings))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors and len(results) == 3
        assert requests.paths == [f"/{CIFAR}"]
    assert all(r == [data / "datasets" / CIFAR] for r in results)
    assert sorted(p.name for p in (data / "datasets").iterdir()) == [LOCK, CIFAR]


CHILD = """
import json, sys, time
from pathlib import Path
from lrsearch.datasets.download import DownloadSettings, ensure
data, mirror, digest = sys.argv[1:]
start = time.monotonic()
paths = ensure("cifar10", Path(data), DownloadSettings(
    mirror=mirror, mirror_digests={"cifar-10-python.tar.gz": digest}))
print(json.dumps({"start": start, "end": time.monotonic(), "paths": [str(p) for p in paths]}))
"""


def test_concurrent_processes_download_once(tmp_path: Path, mirror: Path) -> None:
    data = tmp_path / "data"
    with serve_folder(mirror) as (base, requests):
        requests.delay = 1.0  # long enough for the second process to be waiting on the lock
        children = [subprocess.Popen([sys.executable, "-c", CHILD, str(data), base,
                                      sha256(mirror / CIFAR)], stdout=subprocess.PIPE,
                                     text=True, cwd=Path(__file__).parents[2])
                    for _ in range(2)]
        reports = [json.loads(child.communicate(timeout=60)[0]) for child in children]
        assert [child.returncode for child in children] == [0, 0]
        assert requests.paths == [f"/{CIFAR}"]
    assert max(r["start"] for r in reports) < min(r["end"] for r in reports)  # they overlapped
    assert all(r["paths"] == [str(data / "datasets" / CIFAR)] for r in reports)


@pytest.mark.parametrize("case", ["wrong digest", "real digest", "broken connection",
                                  "http error", "too many bytes", "timeout", "unreachable"])
def test_a_failed_download_keeps_nothing_and_says_why(tmp_path: Path, mirror: Path,
                                                      case: str) -> None:
    data = tmp_path / "data"
    good = {CIFAR: sha256(mirror / CIFAR)}
    with serve_folder(mirror) as (base, requests):
        settings, cause = {
            "wrong digest": (DownloadSettings(mirror=base, mirror_digests={CIFAR: "ab" * 32}),
                             f"its SHA-256 is {good[CIFAR]}, expected {'ab' * 32}"),
            # A mirror's file not named in mirror_digests is checked against the real one.
            "real digest": (DownloadSettings(mirror=base),
                            f"expected {download.KERAS_DATASETS['cifar10'].files[0].sha256}"),
            "broken connection": (DownloadSettings(mirror=f"{base}/truncated",
                                                   mirror_digests=good),
                                  "the connection closed after"),
            "http error": (DownloadSettings(mirror=f"{base}/nowhere", mirror_digests=good),
                           "HTTP 404"),
            "too many bytes": (DownloadSettings(mirror=base, mirror_digests=good,
                                                max_bytes=1000),
                               "more than max_bytes=1000"),
            "timeout": (DownloadSettings(mirror=base, mirror_digests=good, timeout=0.2),
                        "timeout"),
            "unreachable": (DownloadSettings(mirror="http://127.0.0.1:9", mirror_digests=good),
                            "could not be reached"),
        }[case]
        if case == "timeout":
            requests.delay = 1.0
        with pytest.raises(DatasetError) as info:
            ensure("cifar10", data, settings)
        requests.delay = 0.0
        message = str(info.value)
        assert info.value.field == "dataset"
        assert cause in message and "`cifar10`" in message and f"`{CIFAR}`" in message
        for setting in ("LRSEARCH_DATA_MIRROR", "LRSEARCH_DOWNLOADS=false", "LRSEARCH_DATA_DIR"):
            assert setting in message
        assert str(tmp_path) not in message and str(mirror) not in message
        # Nothing partial is left, and the lock is free: a good download then succeeds.
        assert sorted(p.name for p in (data / "datasets").iterdir()) == [LOCK]
        assert ensure("cifar10", data, DownloadSettings(mirror=base, mirror_digests=good))
    assert sorted(p.name for p in (data / "datasets").iterdir()) == [LOCK, CIFAR]


def test_with_downloads_off_a_missing_file_says_how_to_provide_it(tmp_path: Path,
                                                                  mirror: Path) -> None:
    data = tmp_path / "data"
    with serve_folder(mirror) as (base, requests):
        with pytest.raises(DatasetError) as info:
            ensure("cifar10", data, DownloadSettings(allow=False, mirror=base))
        assert len(requests) == 0
    message = str(info.value)
    assert "LRSEARCH_DOWNLOADS=false" in message and f"`{CIFAR}`" in message
    assert "`datasets/` folder" in message and "LRSEARCH_DATA_DIR" in message
    assert "every worker" in message and download.ORIGINS[CIFAR] in message
    assert str(tmp_path) not in message
    assert not (data / "datasets").exists()


def test_files_already_present_are_used_and_missing_ones_fetched(tmp_path: Path) -> None:
    """A file in Keras' cache counts (nothing is fetched, even with downloads off); of
    Fashion-MNIST's four files only the two missing ones are downloaded."""
    data = tmp_path / "data"
    cached = write_cifar10_tar(tmp_path / "keras-home" / "datasets" / CIFAR)
    assert ensure("cifar10", data, DownloadSettings(allow=False)) == [cached]

    mirror, target = tmp_path / "fashion", data / "datasets" / "fashion-mnist"
    mirror.mkdir()
    target.mkdir(parents=True)
    idx_gz(target / "train-images-idx3-ubyte.gz", np.full((4, 28, 28), 51))
    idx_gz(target / "train-labels-idx1-ubyte.gz", np.array([0, 9, 3, 3]))
    idx_gz(mirror / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    idx_gz(mirror / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3]))
    digests = {p.name: sha256(p) for p in mirror.iterdir()}
    with serve_folder(mirror) as (base, requests):
        paths = ensure("fashion_mnist", data, DownloadSettings(mirror=base,
                                                               mirror_digests=digests))
        assert sorted(requests.paths) == ["/t10k-images-idx3-ubyte.gz",
                                          "/t10k-labels-idx1-ubyte.gz"]
    assert [p.name for p in paths] == list(keras_cache.FASHION_FILES)
    assert all(p.parent == target for p in paths)
    d = keras_cache.fashion_mnist(data, 0.2, 0)
    assert d.x_train.shape == (4, 28, 28, 1) and d.y_val.tolist() == [1, 2, 3]


def test_cifar100_is_read_with_its_fine_labels(tmp_path: Path) -> None:
    write_cifar100_tar(tmp_path / "datasets" / "cifar-100-python.tar.gz", train=20, test=10,
                       seed=95)
    d = keras_cache.cifar100(tmp_path, 0.2, 0)
    assert d.x_train.shape == (20, 32, 32, 3) and d.x_val.shape == (10, 32, 32, 3)
    assert d.head == Head.classes(100) and datasets.SOURCES.get("cifar100").head == d.head
    assert d.y_train.tolist() == [(95 + i) % 100 for i in range(20)]
    assert d.x_train[..., 2].min() == 1.0 and d.x_train[..., :2].max() == 0.0
    assert download.locate("cifar100", tmp_path) == [
        tmp_path / "datasets" / "cifar-100-python.tar.gz"]


def test_a_missing_keras_file_points_at_registration(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        keras_cache.cifar100(tmp_path / "data", 0.2, 0)
    message = str(info.value)
    assert "`cifar-100-python.tar.gz`" in message and download.ORIGINS[
        "cifar-100-python.tar.gz"] in message
    assert "LRSEARCH_DOWNLOADS=true" in message
    # a name of one's own: the built-in name is taken
    assert """lrsearch datasets register my-cifar100 '{"kind": "keras", "dataset": "cifar100"}'""" \
        in message


@pytest.mark.parametrize("kwargs, field, fragment", [
    ({"mirror": "ftp://example.com/x"}, "mirror", "http:// or https://"),
    ({"mirror": "file:///srv/x"}, "mirror", "LRSEARCH_DATA_MIRROR must be"),
    ({"mirror_digests": {CIFAR: "ab" * 32}}, "mirror_digests", "LRSEARCH_DATA_MIRROR is not"),
    ({"mirror": "http://m", "mirror_digests": {"cifar10.tgz": "ab" * 32}}, "mirror_digests",
     "`cifar10.tgz`, which is not a dataset file"),
    ({"mirror": "http://m", "mirror_digests": {CIFAR: "xyz"}}, "mirror_digests", "64 hex"),
    ({"timeout": 0}, "timeout", "timeout=0"),
    ({"max_bytes": 0}, "max_bytes", "max_bytes=0"),
])
def test_bad_settings_are_refused(kwargs: dict[str, object], field: str, fragment: str) -> None:
    with pytest.raises(DatasetError) as info:
        DownloadSettings(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field and fragment in str(info.value)
    assert "/srv/x" not in str(info.value)


def test_unknown_dataset_lists_the_keras_ones(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"choose one of: mnist, fashion_mnist, cifar10"):
        ensure("digits", tmp_path, DownloadSettings())
