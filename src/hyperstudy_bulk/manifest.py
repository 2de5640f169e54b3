"""The archive's manifest: the plan and the result, saved atomically beside the data.

`manifest.json` says, per stream, what was asked (data type, scope, id, parameters), what the
server said (total, warnings) and what is safely on disk (files with record counts, bytes and
sha256). Data is written first, then the manifest that points at it, so the manifest never
claims a file that is not complete. It never holds the API key. Knows nothing of HTTP.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from hyperstudy_bulk._version import __version__

MANIFEST_NAME = "manifest.json"
STATE_DIR = ".state"
FORMAT = "hyperstudy-bulk/1"


@dataclass
class FileEntry:
    path: str
    records: int
    bytes: int
    sha256: str


@dataclass
class StreamEntry:
    """One stream over one window of time (see Manifest.snapshots)."""

    key: str
    data_type: str
    scope: str
    scope_id: str
    room_id: str | None
    params: dict[str, str]
    stem: str = ""
    """Archive-relative path of the stream's files, less the part number and suffix."""
    window: int = 0
    """Index into Manifest.snapshots: this entry holds the records up to that snapshot and
    after the one before it (window 0: from the beginning)."""
    status: str = "pending"
    """pending (not finished), complete, or incomplete (see `error`)."""
    error: str | None = None
    server_total: int | None = None
    records: int = 0
    pages: int = 0
    requests: int = 0
    bytes: int = 0
    duplicates_dropped: int = 0
    """Records not written again because a page repeated an id (offsets shifted mid-crawl)."""
    server_duplicates: int = 0
    """Ids the server itself returned twice within one page (counted in its total)."""
    overlap: int = 0
    """Records not written again because an earlier window of the archive holds them."""
    excluded: int = 0
    """Listing records left out because they lie outside the archive's selection."""
    refetches: int = 0
    warnings: list[str] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    superseded: list[FileEntry] = field(default_factory=list)
    """Files of an earlier complete fetch of this window, kept while it is fetched again and
    removed once the new files are recorded (the window's records until then)."""
    open_part: str | None = None
    """A `.part` file holding records of an unfinished stream (not part of the archive)."""
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def held_files(self) -> list[FileEntry]:
        """The files holding the window's records now: the superseded ones until a refetch
        of the window is complete."""
        return self.files if self.status == "complete" or not self.superseded else self.superseded


@dataclass
class MediaEntry:
    """One recording's media file. Never holds its signed URL: that is a bearer credential."""

    recording_id: str
    room_id: str
    path: str
    """Archive-relative path of the file (`<path>.part` while it is being fetched)."""
    file_size: int | None = None
    """The recording row's `fileSize`, when it had one."""
    status: str = "pending"
    """pending (not finished), complete, failed (see `error`), or unavailable: the row names
    no file (its egress failed; see `recording_status`), so there is nothing to fetch."""
    error: str | None = None
    bytes: int = 0
    sha256: str = ""
    recording_status: str | None = None
    """The recording row's own `status`, for an unavailable file."""


@dataclass
class Manifest:
    experiment_id: str
    base_url: str
    snapshot_end_time: str
    """The latest snapshot: every time-ordered stream is archived up to this moment (UTC)."""
    granularity: str
    page_size: int | str
    """The --page-size asked for: a number, or "auto" (then `page_sizes` holds what worked)."""
    data_types: list[str]
    created_at: str
    updated_at: str
    streams: list[StreamEntry] = field(default_factory=list)
    complete: bool = False
    snapshots: list[str] = field(default_factory=list)
    """Every crawl's endTime, oldest first; `--update` appends one (window i of a stream holds
    the records from snapshots[i-1] to snapshots[i])."""
    requests: dict[str, Any] = field(default_factory=dict)
    page_sizes: dict[str, int] = field(default_factory=dict)
    """Each data type's page size that worked (auto): the next run (resume, --update) starts
    from it."""
    media: list[MediaEntry] = field(default_factory=list)
    """The recordings' media files (archives made before media support have none)."""
    selection: dict[str, Any] | None = None
    """The part of the experiment archived (rooms, participants, since/until; see
    selection.py), or None for all of it."""
    format: str = FORMAT
    tool: dict[str, str] = field(
        default_factory=lambda: {"name": "hyperstudy-bulk", "version": __version__}
    )

    def to_json(self) -> bytes:
        # orjson serialises dataclasses natively (in C): no Python-level copy of every field.
        return orjson.dumps(self, option=orjson.OPT_INDENT_2)

    def save(self, folder: Path, name: str = MANIFEST_NAME) -> None:
        """Write it as `folder/name` (a shard writes its own part, see shards.py)."""
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / name, self.to_json())

    @property
    def incomplete_streams(self) -> list[StreamEntry]:
        return [stream for stream in self.streams if stream.status != "complete"]

    @property
    def failed_media(self) -> list[MediaEntry]:
        """Files that exist but are not on disk (yet)."""
        return [entry for entry in self.media if entry.status not in ("complete", "unavailable")]

    @property
    def unavailable_media(self) -> list[MediaEntry]:
        """Recordings without a file (their egress failed): nothing to fetch."""
        return [entry for entry in self.media if entry.status == "unavailable"]


@dataclass
class Checkpoint:
    """A stream's resume state, saved after every page: what is safely on disk and where the
    next page starts. The open part's sha256 covers exactly its first `bytes` bytes."""

    key: str
    end_time: str | None = None
    """The snapshot the offsets belong to; a checkpoint of another snapshot is not resumed."""
    next_offset: int = 0
    done: bool = False
    """The server's last page has been written; only finishing the files is left."""
    complete: bool = False
    """The files are published: the stream is complete even if the manifest never said so."""
    total: int | None = None
    records: int = 0
    pages: int = 0
    requests: int = 0
    refetches: int = 0
    duplicates: int = 0
    """Records dropped because a page repeated an id already written (offsets shifted)."""
    server_duplicates: int = 0
    """Ids repeated within one response: duplicates in the server's own data."""
    overlap: int = 0
    """Records the archive already held (the edge of an earlier window, a known entity)."""
    excluded: int = 0
    """Listing records outside the archive's selection (not written)."""
    files: list[FileEntry] = field(default_factory=list)
    part: FileEntry | None = None
    recent_ids: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    claimed: int = 0
    """The highest part number given to this window, saved before its file is opened."""

    def save(self, folder: Path) -> None:
        atomic_write(checkpoint_path(folder, self.key), orjson.dumps(self))


def checkpoint_path(folder: Path, key: str) -> Path:
    return folder / STATE_DIR / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def load_checkpoint(folder: Path, key: str) -> Checkpoint | None:
    """The stream's checkpoint, or None when there is none (or it cannot be read)."""
    return _read_checkpoint(checkpoint_path(folder, key))


def saved_checkpoints(folder: Path) -> list[Checkpoint]:
    """Every checkpoint saved in the archive (of any stream window, finished or not)."""
    found = (_read_checkpoint(path) for path in sorted((folder / STATE_DIR).glob("*.json")))
    return [checkpoint for checkpoint in found if checkpoint is not None]


def _read_checkpoint(path: Path) -> Checkpoint | None:
    try:
        document = orjson.loads(path.read_bytes())
        part = document.pop("part")
        files = [FileEntry(**f) for f in document.pop("files")]
        return Checkpoint(**document, files=files, part=FileEntry(**part) if part else None)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def drop_checkpoint(folder: Path, key: str) -> None:
    checkpoint_path(folder, key).unlink(missing_ok=True)


def load_manifest(folder: Path, name: str = MANIFEST_NAME) -> Manifest:
    """Read `folder/manifest.json` or another `name` (raises OSError or ValueError when missing
    or damaged)."""
    document = orjson.loads((folder / name).read_bytes())
    streams = [
        StreamEntry(
            **{
                **s,
                "files": [FileEntry(**f) for f in s["files"]],
                "superseded": [FileEntry(**f) for f in s.get("superseded", [])],
            }
        )
        for s in document.pop("streams")
    ]
    media = [MediaEntry(**m) for m in document.pop("media", [])]
    return Manifest(**document, streams=streams, media=media)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


FILE_MODE = 0o666 & ~_umask()
"""The mode `open()` gives a new file: the manifest and checkpoints get it too, so colleagues
who can read the data (a shared project folder) can read and verify the whole archive. Read
once, at import, while no other thread creates files."""


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, FILE_MODE)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable: a crash must not bring the old name back."""
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
