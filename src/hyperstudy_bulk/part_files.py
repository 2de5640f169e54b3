"""Who owns which part file of a stream: one place that numbers them, one that removes them.

A stream's windows (the first crawl, each `--update`) and every refetch of one of them write
parts named `<stem>-NNNNN.ndjson`. PartNumbers is the only source of those numbers: per stream,
one past the highest number any durable record mentions (the manifest's files, superseded files
and open parts, every window's checkpoint with the number it last claimed), then counting up in
memory. The caller saves each claim in its checkpoint before it opens the file, so a number is
never given twice, even across a crash, and a new file never overwrites one that something
records.

Nothing is deleted while it may still be needed: `sweep` runs when no segment is writing (the end
of a run) and removes exactly the part files of the archive's streams that neither the saved
manifest nor a saved checkpoint names, whichever run it is that finished the job (a refetch
superseding old files, an abandoned attempt, a part claimed just before a crash). Knows nothing
of HTTP.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from pathlib import Path

from hyperstudy_bulk.manifest import (
    Checkpoint,
    FileEntry,
    Manifest,
    StreamEntry,
    load_checkpoint,
    saved_checkpoints,
)
from hyperstudy_bulk.sinks import PART_SUFFIX

_PART = re.compile(r"^(?P<name>.+)-(?P<number>\d{5})\.ndjson(?:\.part)?$")


class PartNumbers:
    """Gives out part numbers, per stream, safely from any thread."""

    def __init__(self, folder: Path, manifest: Manifest) -> None:
        self._folder = folder
        self._manifest = manifest
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def claim(self, key: str) -> int:
        """A part number of stream `key` that no file of it has, nor ever will be given again."""
        with self._lock:
            number = self._next.get(key)
            if number is None:
                number = 1 + max(self._recorded(key), default=0)
            self._next[key] = number + 1
            return number

    def _recorded(self, key: str) -> Iterable[int]:
        entries = [entry for entry in self._manifest.streams if entry.key == key]
        yield from (number for entry in entries for number in _entry_numbers(entry))
        for window in range(len(self._manifest.snapshots)):
            checkpoint = load_checkpoint(self._folder, f"{key}#{window}")
            if checkpoint is not None:
                yield checkpoint.claimed
                yield from _checkpoint_numbers(checkpoint)


def sweep(folder: Path, manifest: Manifest) -> list[str]:
    """Delete the part files of the manifest's streams that neither it nor any saved
    checkpoint names; returns their archive-relative paths. Call only when no segment is
    writing, after the manifest that records the files to keep is saved."""
    stems = {entry.key: entry.stem for entry in manifest.streams}
    kept: dict[str, set[int]] = {stem: set() for stem in stems.values()}
    for entry in manifest.streams:
        kept[entry.stem].update(_entry_numbers(entry))
    for checkpoint in saved_checkpoints(folder):
        stem = stems.get(checkpoint.key.rpartition("#")[0])
        if stem is not None:
            kept[stem].update(_checkpoint_numbers(checkpoint))
    removed: list[str] = []
    for directory in sorted({(folder / stem).parent for stem in kept}):
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            match = _PART.match(path.name)
            if match is None:
                continue
            stem = str(path.parent.relative_to(folder) / match["name"])
            numbers = kept.get(stem)
            if numbers is not None and int(match["number"]) not in numbers:
                path.unlink(missing_ok=True)
                removed.append(str(path.relative_to(folder)))
    return removed


def _number(path: str) -> int | None:
    match = _PART.match(Path(path).name)
    return int(match["number"]) if match else None


def _numbers(paths: Iterable[str | None]) -> Iterable[int]:
    return (n for path in paths if path is not None and (n := _number(path)) is not None)


def _entry_numbers(entry: StreamEntry) -> Iterable[int]:
    files: list[FileEntry] = [*entry.files, *entry.superseded]
    return _numbers([*(f.path for f in files), entry.open_part])


def _checkpoint_numbers(checkpoint: Checkpoint) -> Iterable[int]:
    part = checkpoint.part.path + PART_SUFFIX if checkpoint.part else None
    return _numbers([*(f.path for f in checkpoint.files), part])
