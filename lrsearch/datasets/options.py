"""How dataset files are streamed (no TensorFlow: every backend's worker reads these)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lrsearch.errors import DatasetError, require_int


@dataclass(frozen=True)
class StreamOptions:
    """How file streams are read. `shuffle_buffer`: the rows (CSV/TFRecord) or cached
    elements held for shuffling; path lists and npy row indices are shuffled whole.
    `cache`: "memory" or "disk" keeps decoded elements after their first pass (then shuffled
    through `shuffle_buffer`); "disk" writes under `cache_dir`, which it requires. npy
    arrays are memory-mapped and never cached."""

    shuffle_buffer: int = 10_000
    cache: Literal["none", "memory", "disk"] = "none"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        require_int("shuffle_buffer", self.shuffle_buffer, 1, DatasetError)
        if self.cache not in ("none", "memory", "disk"):
            raise DatasetError(f"Argument `cache` must be one of none, memory, disk. "
                               f"Received: cache={self.cache!r}", field="cache")
        if self.cache == "disk" and not self.cache_dir:
            raise DatasetError("Argument `cache_dir` is required with cache='disk'. "
                               f"Received: cache_dir={self.cache_dir!r}", field="cache_dir")
