"""`hyperstudy-bulk verify`: does the archive on disk still say what its manifest says?

Re-hashes every file listed, counts its records (every line must be a JSON object), re-hashes
every media file (a media file the run could not fetch is a problem too), and lists every file
the manifest does not know. Knows nothing of HTTP.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import orjson

from hyperstudy_bulk.archive import Archive
from hyperstudy_bulk.manifest import MANIFEST_NAME, Manifest, MediaEntry, load_manifest
from hyperstudy_bulk.sinks import PART_SUFFIX


@dataclass(frozen=True)
class Problem:
    path: str
    stream: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (stream {self.stream})"


@dataclass(frozen=True)
class Report:
    files: int
    records: int
    problems: list[Problem]
    experiment_id: str = ""
    data_types: tuple[str, ...] = ()
    """The data types the archive holds (what a download finishing it must ask for)."""
    unfinished_streams: int = 0
    """Streams the download has not finished (interrupted or failed): running it again does."""
    unfinished_media: int = 0
    """Media files that exist but are not on disk yet; running the download again fetches them."""

    @property
    def whole(self) -> bool:
        return not self.problems


def verify_archive(folder: Path) -> Report:
    """Check every stream and file of the archive in `folder`. Raises OSError/ValueError when
    the manifest itself is missing or unreadable."""
    archive = Archive(folder, load_manifest(folder))
    manifest = archive.manifest
    problems: list[Problem] = []
    files = records = 0
    listed: set[str] = set()
    for stream in manifest.streams:
        if stream.status != "complete":
            problems.append(Problem(MANIFEST_NAME, stream.key, _unfinished(stream.error)))
        for listed_file in archive.files(stream):
            entry, path = listed_file.entry, listed_file.path
            listed.add(entry.path)
            files += 1
            if not path.is_file():
                problems.append(Problem(entry.path, stream.key, "file is missing"))
                continue
            found, digest, size, bad_line = _scan(path)
            records += found
            if size != entry.bytes:
                problems.append(
                    Problem(entry.path, stream.key, f"{size} bytes, manifest says {entry.bytes}")
                )
            if digest != entry.sha256:
                problems.append(Problem(entry.path, stream.key, "sha256 differs from the manifest"))
            if found != entry.records:
                problems.append(
                    Problem(
                        entry.path, stream.key, f"{found} records, manifest says {entry.records}"
                    )
                )
            if bad_line is not None:
                problems.append(
                    Problem(entry.path, stream.key, f"line {bad_line} is not a JSON object")
                )
    for media in manifest.media:
        if media.status != "unavailable":  # the recording has no file: nothing to check
            files += 1
            problems.extend(_check_media(folder, media))
    problems.extend(
        Problem(stray, "-", "not listed in the manifest")
        for stray in _strays(folder, manifest, listed)
    )
    return Report(
        files,
        records,
        problems,
        experiment_id=manifest.experiment_id,
        data_types=tuple(manifest.data_types),
        unfinished_streams=len(manifest.incomplete_streams),
        unfinished_media=len(manifest.failed_media),
    )


def _unfinished(error: str | None) -> str:
    """Why an entry is not on disk: the error that stopped it, or an interrupted download."""
    if error:
        return f"not fetched: {error}"
    return "not fetched yet: the download stopped before it"


def _strays(folder: Path, manifest: Manifest, listed: set[str]) -> list[str]:
    """Files under `folder` the manifest does not know, of any kind. Hidden files are not
    counted: the tool's own state (.state/, its lock) and what file systems and desktops
    leave behind (.nfs*, .DS_Store); nor are the parts of unfinished streams and media files.
    Names are compared in NFC, as a file system that normalises them (macOS) lists them."""
    known = {MANIFEST_NAME, *listed}
    known.update(stream.open_part for stream in manifest.streams if stream.open_part)
    known.update(media.path for media in manifest.media)
    known.update(media.path + PART_SUFFIX for media in manifest.media if media.status != "complete")
    known = {unicodedata.normalize("NFC", path) for path in known}
    strays = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or path.is_dir():
            continue
        if unicodedata.normalize("NFC", relative.as_posix()) not in known:
            strays.append(relative.as_posix())
    return sorted(strays)


def _check_media(folder: Path, entry: MediaEntry) -> list[Problem]:
    """A media file must be there, whole, and hash to what the manifest says."""
    owner = f"recording {entry.recording_id}"
    if entry.status != "complete":
        return [Problem(entry.path, owner, f"media file {_unfinished(entry.error)}")]
    path = folder / entry.path
    if not path.is_file():
        return [Problem(entry.path, owner, "media file is missing")]
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while piece := stream.read(1 << 20):
            digest.update(piece)
            size += len(piece)
    if size != entry.bytes:
        return [Problem(entry.path, owner, f"{size} bytes, manifest says {entry.bytes}")]
    if digest.hexdigest() != entry.sha256:
        return [Problem(entry.path, owner, "sha256 differs from the manifest")]
    return []


def _scan(path: Path) -> tuple[int, str, int, int | None]:
    """Records, sha256, size, and the first line that is not a JSON object (or None)."""
    digest = hashlib.sha256()
    size = lines = 0
    bad: int | None = None
    with path.open("rb") as stream:
        for line in stream:
            digest.update(line)
            size += len(line)
            lines += 1
            if bad is None and not _is_object(line):
                bad = lines
    return lines, digest.hexdigest(), size, bad


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False
