"""Settings: the only place that reads the environment (prefix LRSEARCH_)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from lrsearch.datasets.references import parse_roots
from service.notifications import urls

OPTUNA_SCHEMA = "optuna"


class Settings(BaseSettings):
    """Every setting, with its environment variable LRSEARCH_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="LRSEARCH_", extra="ignore")

    database_url: str = "sqlite:///.lrsearch/lrsearch.db"
    optuna_storage: str | None = None
    data_dir: Path = Path(".lrsearch/data")
    max_epochs: int = 1000
    max_trials: int = 10_000
    max_batch_size: int = 65_536
    max_num_iter: int = 10_000
    max_repeats: int = 20
    max_preview_steps: int = 1_000_000
    # Work bounded at submission, before it is done: a model's weights (counted without
    # building it), a grid search's points (the product of the values per parameter), and a
    # schedule curve's evaluations (steps evaluated x the family's pieces, e.g. piecewise knots).
    max_model_params: int = 50_000_000
    max_grid_points: int = 10_000
    max_curve_evaluations: int = 10_000_000
    max_body_bytes: int = 1_000_000
    max_upload_bytes: int = 256_000_000
    # An uploaded .npz's arrays may declare at most this many bytes together once
    # decompressed (413 beyond); read from the zip directory before anything is decompressed,
    # so a 1 MB compression bomb is refused or checked a chunk at a time, never inflated whole.
    max_decompressed_bytes: int = 2_000_000_000
    # The uploads one tenant may keep: the sum of their file sizes (413 beyond).
    tenant_storage_bytes: int = 10_000_000_000
    page_size_max: int = 500
    # Dataset references: the folders and buckets whose files tenants may register (a JSON
    # list or comma-separated; local paths, or gs://, s3://... where tf.io.gfile reads them on
    # the workers). Empty: references are refused. A URI must lie under one of them after
    # symlinks are followed.
    data_roots: Annotated[tuple[str, ...], NoDecode] = ()
    max_pending_datasets: int = 5  # registrations queued or running per tenant (429 beyond)
    # Keras datasets (mnist, fashion_mnist, cifar10, cifar100) are downloaded on demand by a
    # registration job into <data_dir>/datasets/, checked against the real files' SHA-256.
    # false: never download (the files must be put there by hand). A mirror serves the same
    # file names from another base URL; files it serves that are not the originals (a local
    # test mirror) need their digests in data_mirror_digests (a JSON object name -> sha256).
    downloads: bool = True
    data_mirror: str | None = None
    data_mirror_digests: dict[str, str] = {}
    # How workers stream dataset references: the elements held for shuffling rows (CSV,
    # TFRecord; file lists are shuffled whole), and an optional cache of decoded elements
    # ("memory", or "disk" under <data_dir>/cache/); off by default.
    shuffle_buffer: int = 10_000
    data_cache: Literal["none", "memory", "disk"] = "none"
    max_active_studies: int = 20  # queued or running studies per tenant
    max_active_range_tests: int = 5  # queued or running range tests per tenant
    # Database connections of one API process; as many requests are let in at once, and its
    # thread pool gets the same size (service/main.py, DatabaseSlots, says why).
    db_pool_size: int = 20
    # Connections an API process may open beyond its pool, for work outside the requests let
    # in (none by default: the requests let in are as many as the pool). One API process uses
    # at most db_pool_size + db_max_overflow connections; the README's connection budget adds
    # up every process's.
    db_max_overflow: int = Field(default=0, ge=0, le=1000)

    # API key checks remembered per API process (service/auth/cache.py). A key revoked with
    # `lrsearch keys revoke` keeps working for at most this many seconds in each API process
    # (in a process that revokes it itself, it stops at once); a new key works at once
    # everywhere, since refused keys are never remembered. "No key exists yet" (anonymous
    # access) is also believed this long: a key created by another process ends anonymous
    # access within it. 0: every request checks the database.
    key_cache_seconds: float = Field(default=5.0, ge=0, le=3600)
    # Prometheus metrics at /metrics: off with LRSEARCH_METRICS_ENABLED=false; with a token
    # set, scrapers must send `Authorization: Bearer <token>`.
    metrics_enabled: bool = True
    metrics_token: str | None = None
    # Once an API key exists, /metrics needs the token; true keeps it open to anyone who can
    # reach it (a scraper on a private network).
    metrics_public: bool = False
    # Host names the server answers to (the Host header, port ignored), comma-separated in the
    # environment; "*" accepts any, "*.example.com" a domain's subdomains. Anything else is
    # refused (400), so a web page on another site cannot reach a local server through DNS
    # rebinding. Behind a proxy, list the public name. `lrsearch api --host ADDRESS` adds a
    # specific ADDRESS it binds to.
    allowed_hosts: Annotated[list[str], NoDecode] = ["localhost", "127.0.0.1", "[::1]"]
    # Believe X-Forwarded-Proto from a TLS-terminating proxy (login cookies become Secure).
    # Only turn on when every request comes through that proxy: clients can send the header.
    trust_forwarded_headers: bool = False
    web_session_seconds: int = 7 * 24 * 3600  # a web page login lasts this long
    # Study-end notifications (webhooks). The hosts a study's `notify.url` may name, as
    # patterns (comma-separated in the environment): a host name or IP address ("hooks.lan",
    # "127.0.0.1", "[::1]"), "*.example.com" (its subdomains), or "public": any host whose
    # every address is public (not loopback, private, link-local, multicast, reserved,
    # unspecified or otherwise not globally routable). Empty means "public". A listed host
    # may resolve to any address, on any port: listing it is the operator's consent to reach
    # it. An entry with a scheme, port or path is refused when the settings load. Checked
    # at submission and again right before each attempt (the request goes to the address
    # checked then).
    notify_allowed_hosts: Annotated[list[str], NoDecode] = []
    notify_max_attempts: int = Field(default=5, ge=1, le=100)
    # The wait after the n-th failed attempt: notify_backoff_seconds * 2**(n-1), at most
    # notify_backoff_max_seconds.
    notify_backoff_seconds: float = Field(default=5.0, ge=0, le=86_400)
    notify_backoff_max_seconds: float = Field(default=3600.0, ge=0, le=7 * 86_400)
    # One attempt in all: resolving the host, connecting, sending, and reading the answer's
    # status line and headers (and at most 1 KiB of its body); the attempt is abandoned, as a
    # failed one, when this runs out. At submission, resolving gets at most 2 s of it.
    notify_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # How often the reaper (and each idle worker) looks for deliveries that are due.
    notify_poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    # Workers
    # Operator plugins (comma-separated module names, besides the `lrsearch.plugins` entry
    # points) the workers' children import before loading models: custom Keras layers,
    # losses and metrics uploaded models may use, and model builders (see README).
    plugins: Annotated[list[str], NoDecode] = []
    lease_seconds: float = 30.0  # a claim expires this long after its last heartbeat
    heartbeat_seconds: float = 5.0
    max_attempts: int = 3  # lost worker / child crash / timeout retries per slot
    trials_per_child: int = 20  # a child process is replaced after this many jobs
    trial_timeout_seconds: float = 24 * 3600.0
    grace_seconds: float = 60.0  # after the first SIGTERM, how long a running job may finish
    # Trial checkpoints (model and optimizer state after each epoch), so that a trial whose
    # worker stopped or died resumes on another worker from its last epoch, its schedule at
    # the same step. Every worker must see the same folder (a shared volume) for a trial to
    # resume elsewhere; a worker that finds no checkpoint starts the trial over. Default:
    # <data_dir>/checkpoints. Removed when the trial ends.
    checkpoints: bool = True
    checkpoint_dir: Path | None = None
    poll_seconds: float = 1.0  # idle wait between claim attempts
    # Fault injection for the crash-recovery tests: trial slots whose child process kills
    # itself with SIGSEGV. Empty in production.
    fault_crash_slots: str = ""
    # ... and trial slots whose worker process kills itself right after committing the
    # trial's outcome, before telling Optuna (the reconciliation tests). Empty in production.
    fault_exit_before_tell_slots: str = ""
    # ... and a pause before each epoch's write, so a test can act at an epoch boundary
    # (cancel, delete, expire the lease) while the child waits. Zero in production.
    fault_epoch_pause_seconds: float = 0.0

    @property
    def checkpoint_root(self) -> Path | None:
        """Where trial checkpoints go (None: turned off)."""
        if not self.checkpoints:
            return None
        return self.checkpoint_dir if self.checkpoint_dir is not None \
            else self.data_dir / "checkpoints"

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        """"a, B" -> ["a", "b"]: the environment gives one comma-separated string."""
        return _comma_list(value, str.lower)

    @field_validator("notify_allowed_hosts", mode="before")
    @classmethod
    def _split_notify_hosts(cls, value: Any) -> Any:
        """"public, Hooks.LAN" -> ["public", "hooks.lan"]; a bare "*" is refused: it would
        let any study make the server post to any address, its own included."""
        hosts = _comma_list(value, str.lower)
        if isinstance(hosts, list) and "*" in hosts:
            raise ValueError("LRSEARCH_NOTIFY_ALLOWED_HOSTS must not contain a bare '*' (any "
                             "host, internal addresses included); list the hosts, use "
                             "'*.example.com' for a domain, or 'public'. Received: "
                             f"{value!r}")
        # An entry with a scheme, a port or a path would never match a host: refused here,
        # not discovered when every notification to that host is refused.
        for entry in hosts if isinstance(hosts, list) else ():
            try:
                urls.check_allowed(entry)
            except ValueError as e:
                raise ValueError(f"LRSEARCH_NOTIFY_ALLOWED_HOSTS entry {entry!r} {e}. "
                                 f"Received: {value!r}") from None
        return hosts

    @field_validator("data_roots", mode="before")
    @classmethod
    def _parse_roots(cls, value: Any) -> Any:
        """A JSON list or a comma-separated list (lrsearch.datasets.references.parse_roots)."""
        return parse_roots(value) if isinstance(value, str | list | tuple) else value

    @model_validator(mode="after")
    def _roots_apart_from_data_dir(self) -> Settings:
        """No data root may contain the data directory or lie in it: that directory holds
        every tenant's uploads, caches and (by default) the database, and a reference under
        a root, or a symlink inside one, would read them."""
        data_dir = os.path.realpath(self.data_dir)
        for root in self.data_roots:
            if "://" in root:
                continue
            base = os.path.realpath(root.split("{tenant}")[0] or "/")
            if os.path.commonpath([base, data_dir]) in (base, data_dir):
                raise ValueError(f"LRSEARCH_DATA_ROOTS must not contain LRSEARCH_DATA_DIR or "
                                 f"lie in it. Received: root {root!r}, data_dir "
                                 f"{str(self.data_dir)!r}")
        return self

    @field_validator("plugins", mode="before")
    @classmethod
    def _split_plugins(cls, value: Any) -> Any:
        """"a.b, c" -> ["a.b", "c"] (module names keep their case)."""
        return _comma_list(value, str)

    def optuna_url(self) -> str:
        """Optuna's storage: given, or derived so Optuna's tables never mix with ours:
        SQLite -> optuna.db beside our file; PostgreSQL -> the same database, schema `optuna`."""
        if self.optuna_storage:
            return self.optuna_storage
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite":
            folder = Path(url.database or ".").parent
            return str(url.set(database=str(folder / "optuna.db")))
        options = f"-csearch_path={OPTUNA_SCHEMA}"
        return url.update_query_dict({"options": options}).render_as_string(hide_password=False)


def _comma_list(value: Any, form: Callable[[str], str]) -> Any:
    """A comma-separated string (as the environment gives it) or a list, as a list of
    stripped, non-empty items in `form`; anything else is left to pydantic to refuse."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list | tuple):
        return [form(str(item).strip()) for item in value if str(item).strip()]
    return value
