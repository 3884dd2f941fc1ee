"""Reading an untrusted .npz without trusting it.

An .npz is a zip of `.npy` members. Before any array is allocated, `Archive` checks what the
file declares: the zip's end record (a bounded central directory), every member of the
central directory (exact `<key>.npy` names, no duplicates, stored or deflate only, not
encrypted, declared sizes within a budget) and every `.npy` header (numeric dtype, and a shape
whose bytes equal the member's declared size). `Archive.chunks` then streams a member's elements
a bounded chunk at a time, refusing a member whose real data is shorter or longer than declared,
so a compression bomb or a lying header costs at most one chunk of memory. Nothing is unpickled.
"""

from __future__ import annotations

import copy
import math
import struct
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np
from numpy.lib import format as npy

from lrsearch.errors import DatasetError

# The end-of-central-directory record (22 bytes + a comment of at most 65535 bytes) and the
# zip64 locator and record, as zipfile reads them.
_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
# A few .npy members with short names need well under 1 KiB of central directory; the bound
# keeps zipfile from building millions of entries out of a hostile directory.
MAX_DIRECTORY_BYTES = 64 * 1024
# numpy's own default bound on a .npy header; the magic and length prefix add at most 12 bytes.
MAX_HEADER_BYTES = 10_000
CHUNK_BYTES = 4 << 20
NUMERIC_KINDS = "buif"  # bool, unsigned, signed, float


class DatasetTooLarge(DatasetError):
    """The arrays would take more bytes once decompressed than the caller allows."""


@dataclass(frozen=True)
class Member:
    """One `.npy` member as its zip entry and header declare it (checked for consistency)."""

    key: str
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    header_bytes: int

    @property
    def data_bytes(self) -> int:
        return self.info.file_size - self.header_bytes


def _invalid(reason: object, field: str = "file") -> DatasetError:
    return DatasetError(f"Not a valid .npz file: {reason}", field=field)


def _corrupt(key: str, info: zipfile.ZipInfo, reason: object) -> DatasetError:
    # zipfile checks the CRC once a stream ends: a bad one means corrupt data, or data running
    # past the declared size (`_probe` asks for one byte more).
    return DatasetError(f"`{key}` is corrupt or holds more data than the {info.file_size} "
                        f"bytes its zip entry declares: {reason}", field=key)


def _probe(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    """The entry, declaring one byte more: zipfile stops reading at the declared size, so data
    past it would otherwise be cut off silently instead of exposing the lie."""
    probe = copy.copy(info)
    probe.file_size = info.file_size + 1
    return probe


def check_directory(path: Path, max_members: int, invalid: Callable[[str], Exception] | None = None
                    ) -> None:
    """Refuse a zip whose end record announces more members or a larger central directory
    than a few arrays need, before zipfile parses (and allocates) that directory. Reads the
    same end record zipfile would: the last 22 bytes, else the last signature in the last
    64 KiB, and the zip64 record when a locator precedes it. `invalid(reason)` makes the error
    (by default a DatasetError about an .npz)."""
    _invalid_ = invalid or _invalid
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        tail_len = min(size, _EOCD.size + 0xFFFF)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        at = len(tail) - _EOCD.size
        if not (at >= 0 and tail[at:at + 4] == b"PK\x05\x06" and tail[-2:] == b"\0\0"):
            at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < _EOCD.size:
            raise _invalid_("it is not a zip archive")
        record = _EOCD.unpack_from(tail, at)
        entries, directory = record[4], record[5]
        end = size - tail_len + at
        if end >= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size:
            f.seek(end - _ZIP64_LOCATOR.size)
            if f.read(4) == b"PK\x06\x07":
                f.seek(end - _ZIP64_LOCATOR.size - _ZIP64_EOCD.size)
                raw = f.read(_ZIP64_EOCD.size)
                if raw[:4] != b"PK\x06\x06":
                    raise _invalid_("its zip64 end record is corrupt")
                entries, directory = _ZIP64_EOCD.unpack(raw)[7:9]
    if entries > max_members:
        raise _invalid_(f"its zip directory lists {entries} members; at most {max_members} "
                       "members are allowed")
    if directory > MAX_DIRECTORY_BYTES:
        raise _invalid_(f"its zip directory takes {directory} bytes, more than the "
                       f"{MAX_DIRECTORY_BYTES} a few members need")


def check_entries(infos: list[zipfile.ZipInfo], keys: Collection[str],
                  max_bytes: int | None) -> dict[str, zipfile.ZipInfo]:
    """The central directory's entries by array key; raises DatasetError unless every name is
    exactly `<key>.npy` for an allowed key, once, stored or deflated, not encrypted, and the
    declared sizes add up to at most `max_bytes` (DatasetTooLarge)."""
    allowed = ", ".join(f"{k}.npy" for k in sorted(keys))
    found: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        key = info.filename.removesuffix(".npy")
        if key not in keys or info.filename != f"{key}.npy":
            raise DatasetError(f"Unknown member `{info.filename}` in the .npz; allowed: "
                               f"{allowed}", field="file")
        if key in found:
            raise DatasetError(f"`{info.filename}` appears more than once in the .npz",
                               field=key)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DatasetError(f"`{key}` uses zip compression method {info.compress_type}; "
                               "only stored (0) and deflate (8) are accepted", field=key)
        if info.flag_bits & 0x1:
            raise DatasetError(f"`{key}` is encrypted", field=key)
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise DatasetError(f"`{key}` is stored uncompressed but declares {info.file_size} "
                               f"bytes in {info.compress_size}", field=key)
        found[key] = info
    total = sum(i.file_size for i in found.values())
    if max_bytes is not None and total > max_bytes:
        raise DatasetTooLarge(
            f"The arrays declare {total} bytes once decompressed, more than "
            f"max_decompressed_bytes={max_bytes}. Received: "
            + ", ".join(f"{k}={i.file_size}" for k, i in found.items()), field="file")
    return found


class _HeaderReader:
    """A read-only view of a member's stream that counts the bytes read and refuses to read
    past `limit`, so a header that claims a length of gigabytes is refused, not read."""

    def __init__(self, raw: IO[bytes], key: str, limit: int) -> None:
        self.raw, self.key, self.limit, self.count = raw, key, limit, 0

    def read(self, n: int = -1) -> bytes:
        if n < 0 or self.count + n > self.limit:
            raise DatasetError(f"`{self.key}` has a .npy header longer than {self.limit} "
                               "bytes", field=self.key)
        data = self.raw.read(n)
        self.count += len(data)
        return data


def read_header(zf: zipfile.ZipFile, key: str, info: zipfile.ZipInfo) -> Member:
    """The member's .npy header (versions 1.0 and 2.0), checked against its zip entry: a
    numeric dtype, non-negative dimensions, and shape x itemsize equal to the declared size
    minus the header. Reads at most MAX_HEADER_BYTES of decompressed data."""
    with zf.open(_probe(info)) as raw:
        fp = _HeaderReader(raw, key, MAX_HEADER_BYTES + 12)
        try:
            version = npy.read_magic(fp)
            if version == (1, 0):
                header = npy.read_array_header_1_0(fp)
            elif version == (2, 0):
                header = npy.read_array_header_2_0(fp)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except (ValueError, EOFError) as e:
            raise DatasetError(f"`{key}` has no valid .npy header: {e}", field=key) from None
    shape, fortran_order, dtype = header
    if dtype.hasobject:
        raise DatasetError(f"`{key}` holds Python objects (dtype {dtype}), which cannot be read "
                           "without pickle; pickle is refused", field=key)
    if dtype.kind not in NUMERIC_KINDS or dtype.subdtype is not None:
        raise DatasetError(f"`{key}` must hold numbers (booleans, integers or floats). "
                           f"Received dtype {dtype}", field=key)
    if any(d < 0 for d in shape):
        raise DatasetError(f"`{key}` declares an invalid shape {shape}", field=key)
    member = Member(key, info, tuple(shape), dtype, bool(fortran_order), fp.count)
    declared = math.prod(member.shape) * dtype.itemsize
    if declared != member.data_bytes:
        raise DatasetError(f"`{key}` declares shape {member.shape} of {dtype}, {declared} bytes, "
                           f"but its zip entry holds {member.data_bytes} bytes of data",
                           field=key)
    return member


class Archive:
    """An .npz opened for checked reading: `members` (key -> Member) is known, and checked,
    on construction; `chunks(key)` streams one member's elements. Use as a context manager.

    `max_bytes` bounds the declared decompressed size of all members together (None: no
    bound). Raises DatasetError naming the array (or `file`) at fault."""

    def __init__(self, path: Path, keys: Collection[str], max_bytes: int | None) -> None:
        check_directory(path, len(keys))
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise _invalid(e) from None
        try:
            infos = check_entries(self._zip.infolist(), keys, max_bytes)
            self.members = {k: self._header(k, i) for k, i in infos.items()}
        except BaseException:
            self._zip.close()
            raise

    def _header(self, key: str, info: zipfile.ZipInfo) -> Member:
        try:
            return read_header(self._zip, key, info)
        except (zipfile.BadZipFile, zlib.error) as e:
            raise _corrupt(key, info, e) from None
        except (OSError, NotImplementedError, RuntimeError) as e:
            raise _invalid(e, field=key) from None

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._zip.close()

    def chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The member's elements in storage order (C, or Fortran when its header says so), as
        1-D arrays of at most `chunk_bytes`; raises DatasetError when the member's real data
        is shorter or longer than its zip entry declares or fails its checksum."""
        m = self.members[key]
        step = max(1, chunk_bytes // m.dtype.itemsize) * m.dtype.itemsize
        try:
            with self._zip.open(_probe(m.info)) as raw:
                raw.read(m.header_bytes)
                done = 0
                while done < m.data_bytes:
                    want = min(step, m.data_bytes - done)
                    buf = raw.read(want)
                    if len(buf) < want:
                        raise DatasetError(f"`{key}` ends after {done + len(buf)} of the "
                                           f"{m.data_bytes} bytes of data it declares",
                                           field=key)
                    done += want
                    yield np.frombuffer(buf, dtype=m.dtype)
                extra = raw.read(1)
        except EOFError:
            raise DatasetError(f"`{key}` ends before the {m.data_bytes} bytes of data it "
                               "declares", field=key) from None
        except (zipfile.BadZipFile, zlib.error) as e:
            raise _corrupt(key, m.info, e) from None
        if extra:
            raise DatasetError(f"`{key}` holds more data than the {m.info.file_size} bytes its "
                               "zip entry declares", field=key)
