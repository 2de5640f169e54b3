"""The archive's manifest: the plan and the result, saved atomically beside the data.

`manifest.json` says, per stream, what was asked (data type, scope, id, parameters), what the
server said (total, warnings) and what is safely on disk (files with record counts, bytes and
sha256). Data is written first, then the manifest that points at it, so the manifest never
claims a file that is not complete. It never holds the API key. Knows nothing of HTTP.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from hyperstudy_bulk._version import __version__

MANIFEST_NAME = "manifest.json"
FORMAT = "hyperstudy-bulk/1"


@dataclass
class FileEntry:
    path: str
    records: int
    bytes: int
    sha256: str


@dataclass
class StreamEntry:
    key: str
    data_type: str
    scope: str
    scope_id: str
    room_id: str | None
    params: dict[str, str]
    status: str = "pending"
    """pending (not finished), complete, or incomplete (see `error`)."""
    error: str | None = None
    server_total: int | None = None
    records: int = 0
    pages: int = 0
    requests: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    open_part: str | None = None
    """A `.part` file holding records of an unfinished stream (not part of the archive)."""
    started_at: str | None = None
    finished_at: str | None = None


@dataclass
class Manifest:
    experiment_id: str
    base_url: str
    snapshot_end_time: str
    """Every time-ordered stream was bounded by endTime = this moment (UTC)."""
    granularity: str
    page_size: int
    data_types: list[str]
    created_at: str
    updated_at: str
    streams: list[StreamEntry] = field(default_factory=list)
    complete: bool = False
    requests: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    tool: dict[str, str] = field(
        default_factory=lambda: {"name": "hyperstudy-bulk", "version": __version__}
    )

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self), option=orjson.OPT_INDENT_2)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / MANIFEST_NAME, self.to_json())

    @property
    def incomplete_streams(self) -> list[StreamEntry]:
        return [stream for stream in self.streams if stream.status != "complete"]


def load_manifest(folder: Path) -> Manifest:
    """Read `folder/manifest.json` (raises OSError or ValueError when missing or damaged)."""
    document = orjson.loads((folder / MANIFEST_NAME).read_bytes())
    streams = [
        StreamEntry(**{**s, "files": [FileEntry(**f) for f in s["files"]]})
        for s in document.pop("streams")
    ]
    return Manifest(**document, streams=streams)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file."""
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
