"""Where records go: NDJSON part files written as pages arrive, and safe names for them.

A part is written as `<name>.ndjson.part` and renamed to `<name>.ndjson` only once it is
complete and fsynced, so a reader that globs `*.ndjson` never sees a partial file. Records are
re-encoded one per line with orjson: the same JSON values, keys and order the API sent.
Knows nothing of HTTP.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

PART_SUFFIX = ".part"
_PLAIN = re.compile(r"[A-Za-z0-9_-]")
MAX_NAME = 120


def safe_name(identifier: str) -> str:
    """A file-name component for an untrusted id: reversible, never a path, never hidden.

    Every character outside [A-Za-z0-9_-] becomes %XX escapes of its UTF-8 bytes (so '/',
    '..', control characters and unicode are harmless and `unquote` reverses it). Names longer
    than MAX_NAME are cut and given a hash of the whole id, so they stay unique; the manifest
    maps every file back to its id.
    """
    encoded = "".join(
        char if _PLAIN.fullmatch(char) else "".join(f"%{byte:02X}" for byte in char.encode())
        for char in identifier
    )
    if not encoded:
        encoded = "%00empty"
    if len(encoded) > MAX_NAME:
        digest = hashlib.sha256(identifier.encode()).hexdigest()[:16]
        encoded = f"{encoded[: MAX_NAME - 18]}~{digest}"
    return encoded


def encode_records(records: list[dict[str, Any]]) -> bytes:
    """NDJSON bytes for records: one compact JSON object per line."""
    return b"".join(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE) for record in records)


@dataclass(frozen=True)
class FileResult:
    """A finished file: its path relative to the archive, and what it holds."""

    path: str
    records: int
    bytes: int
    sha256: str


class PartWriter:
    """Appends NDJSON to one part file, hashing as it goes; `finish()` makes it visible."""

    def __init__(self, root: Path, relative: str) -> None:
        self.relative = relative
        self._final = root / relative
        self._final.parent.mkdir(parents=True, exist_ok=True)
        self._temp = self._final.with_name(self._final.name + PART_SUFFIX)
        self._file = self._temp.open("wb")
        self._hash = hashlib.sha256()
        self.records = 0
        self.bytes = 0

    def write(self, chunk: bytes, records: int) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self.records += records
        self.bytes += len(chunk)

    def finish(self) -> FileResult:
        """Flush, fsync and rename into place; the file is complete from here on."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self._final)
        return FileResult(self.relative, self.records, self.bytes, self._hash.hexdigest())

    def abandon(self) -> None:
        """Close without publishing: the `.part` file stays, and the manifest says incomplete."""
        if not self._file.closed:
            self._file.flush()
            self._file.close()


class StreamSink:
    """All the files of one stream: `<stem>-00001.ndjson`, `-00002`, ... each up to
    `part_max_bytes` (a page is never split across parts)."""

    def __init__(self, root: Path, stem: str, *, part_max_bytes: int) -> None:
        self._root = root
        self._stem = stem
        self._part_max = part_max_bytes
        self._writer: PartWriter | None = None
        self.files: list[FileResult] = []

    def _part_name(self) -> str:
        return f"{self._stem}-{len(self.files) + 1:05d}.ndjson"

    def write(self, ndjson: bytes, records: int) -> None:
        """Append one page's NDJSON (from `encode_records`)."""
        if self._writer is None:
            self._writer = PartWriter(self._root, self._part_name())
        self._writer.write(ndjson, records)
        if self._writer.bytes >= self._part_max:
            self.files.append(self._writer.finish())
            self._writer = None

    def finish(self) -> list[FileResult]:
        """Publish the last part (an empty stream still gets one empty file, so the archive
        shows it was fetched and held nothing)."""
        if self._writer is not None or not self.files:
            writer = self._writer or PartWriter(self._root, self._part_name())
            self.files.append(writer.finish())
            self._writer = None
        return self.files

    def abandon(self) -> None:
        if self._writer is not None:
            self._writer.abandon()
            self._writer = None

    @property
    def open_part(self) -> str | None:
        return self._writer.relative + PART_SUFFIX if self._writer else None
