"""One real `lrsearch serve` (API + 1 worker + reaper, SQLite under its own folder) shared by
the end-to-end tests of the user tools: the CLI, the Python client, the web page in Chromium,
/metrics, Optuna's own tools and the README walk-through.

Its data roots (LRSEARCH_DATA_ROOTS) are `<folder>/roots/shared` and `<folder>/roots/other`,
and Keras datasets are downloaded from a local mirror on 127.0.0.1 serving a tiny CIFAR-10 in
the real format (LRSEARCH_DATA_MIRROR, its digest in LRSEARCH_DATA_MIRROR_DIGESTS)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lrsearch.client import Client
from tests.datasets.keras_files import RequestLog, serve_folder, write_cifar10_tar
from tests.processes import LRSEARCH, free_port, wait_ready


@dataclass
class Server:
    pid: int  # the `lrsearch serve` process (it runs the API)
    url: str
    folder: Path  # its working directory: .lrsearch/ holds lrsearch.db and optuna.db
    log: Path
    env: dict[str, str]  # what a client process needs: LRSEARCH_URL, no server settings
    server_env: dict[str, str]  # the server's own (what another worker process needs)
    roots: Path  # holds the data roots shared/ and other/
    mirror: RequestLog  # the requests the local dataset mirror answered

    def client(self) -> Client:
        return Client(self.url, timeout=60)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-8000:]


def client_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.update(LRSEARCH_URL=url, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               COLUMNS="160")
    return env


# An operator plugin, as a module the server's workers import (LRSEARCH_PLUGINS): a custom
# layer and a model builder. Importing it appends the importing process's pid to a marker
# file, so a test can tell which processes ran it (never the API).
PLUGIN = '''
import os

import keras

import lrsearch.plugins

with open(os.environ["BYOM_MARKER"], "a") as marker:
    marker.write(f"{os.getpid()}\\n")


@keras.saving.register_keras_serializable(package="byom")
class Scale(keras.layers.Layer):
    """Multiplies its input by a learned per-feature scale."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


@lrsearch.plugins.builder("wide_mlp", params={"units": (32, "hidden units")})
def wide_mlp(input_shape, head, units=32):
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(units, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(head.units, activation=head.activation)(x))
'''


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = client_env(f"http://127.0.0.1:{port}")
    del env["LRSEARCH_URL"]
    plugins = folder / "plugins"
    plugins.mkdir()
    (plugins / "byom_layers.py").write_text(PLUGIN)
    roots = folder / "roots"
    for root in ("shared", "other"):
        (roots / root).mkdir(parents=True)
    tar = write_cifar10_tar(folder / "mirror" / "cifar-10-python.tar.gz", per_batch=8)
    digest = hashlib.sha256(tar.read_bytes()).hexdigest()
    with serve_folder(tar.parent) as (mirror_url, requests):
        env.update(LRSEARCH_POLL_SECONDS="0.2", LRSEARCH_HEARTBEAT_SECONDS="1",
                   LRSEARCH_PLUGINS="byom_layers", BYOM_MARKER=str(folder / "plugin-imports"),
                   LRSEARCH_DATA_ROOTS=json.dumps([str(roots / "shared"),
                                                   str(roots / "other")]),
                   LRSEARCH_DATA_MIRROR=mirror_url,
                   LRSEARCH_DATA_MIRROR_DIGESTS=json.dumps({tar.name: digest}),
                   PYTHONPATH=os.pathsep.join([str(plugins), *filter(None, [
                       os.environ.get("PYTHONPATH")])]))
        log = folder / "serve.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([LRSEARCH, "serve", "--port", str(port), "--workers", "1"],
                                    cwd=folder, env=env, stdout=out, stderr=out,
                                    start_new_session=True)
        server = Server(proc.pid, f"http://127.0.0.1:{port}", folder, log,
                        client_env(f"http://127.0.0.1:{port}"), env, roots, requests)
        try:
            wait_ready(server.url, proc, log)
            yield server
        finally:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def run_cli(server: Server, *args: str, timeout: float = 300, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LRSEARCH, *args], capture_output=True, text=True, env=server.env,
                          timeout=timeout, cwd=cwd)


SMALL_STUDY: dict[str, Any] = {
    "name": "e2e-cross-family", "families": ["cosine", "constant"], "dataset": "digits",
    "epochs": 2, "batch_size": 64, "n_trials": 4, "pruner": {"name": "none"},
    "search_space": {"cosine": {"peak_lr": {"low": 0.05, "high": 0.5}},
                     "constant": {"lr": {"low": 0.02, "high": 0.2}}}}


@pytest.fixture(scope="session")
def finished_study(server: Server) -> dict[str, Any]:
    """A cross-family study of 4 tiny trials, submitted with the Python client and waited on."""
    with server.client() as c:
        study = c.submit(SMALL_STUDY, idempotency_key="e2e-study")
        done = c.wait(study["id"], timeout=600, poll=0.5)
    assert done["status"] == "succeeded", (done, server.logs())
    return done


CONFIRMED_STUDY: dict[str, Any] = {
    "name": "e2e-confirmed", "family": "cosine", "dataset": "digits", "epochs": 2,
    "batch_size": 64, "n_trials": 2, "pruner": {"name": "none"},
    "search_space": {"cosine": {"peak_lr": {"low": 0.05, "high": 0.5}}},
    "baseline": {"trials": 2, "search_space": {"lr": {"low": 0.02, "high": 0.2}}},
    "confirm": {"top_k": 1, "seeds": 2}}


@pytest.fixture(scope="session")
def confirmed_study(server: Server) -> dict[str, Any]:
    """A study with the constant-LR baseline and a confirmation: 2 search trials, 2 baseline
    trials, then the best schedule and the best constant retrained with 2 seeds each."""
    with server.client() as c:
        study = c.submit(CONFIRMED_STUDY, idempotency_key="e2e-confirmed")
        done = c.wait(study["id"], timeout=600, poll=0.5)
    assert done["status"] == "succeeded" and done["n_slots"] == 8, (done, server.logs())
    return done


@pytest.fixture(scope="session")
def finished_range_test(server: Server) -> dict[str, Any]:
    with server.client() as c:
        test = c.range_test({"dataset": "digits", "min_lr": 1e-4, "max_lr": 10,
                             "num_iter": 50, "batch_size": 32}, idempotency_key="e2e-rt")
        done = c.wait_range_test(test["id"], timeout=300, poll=0.5)
    assert done["status"] == "succeeded", (done, server.logs())
    return done
