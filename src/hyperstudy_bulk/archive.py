"""Reading an archive: the one door through which verify, load, export and report see its files.

An archive's data is what its manifest lists, nothing else: a `.part` file, a stray NDJSON file
or a folder the manifest does not name is never read. A data type's streams come in window
order (every `--update` adds a window), each stream's files in part order, so the records of an
experiment-scope stream come in the API's order. Knows nothing of HTTP, pandas or pyarrow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hyperstudy_bulk.datatypes import DataType, data_type_named
from hyperstudy_bulk.errors import HyperStudyBulkError
from hyperstudy_bulk.manifest import FileEntry, Manifest, StreamEntry, load_manifest


class ArchiveError(HyperStudyBulkError):
    """The folder is not an archive, or does not hold what was asked (exit code 2)."""


class IncompleteDataError(HyperStudyBulkError):
    """A data type's streams are not all complete: reading it would give a partial answer."""


@dataclass(frozen=True)
class ListedFile:
    """One NDJSON file the manifest lists, with the stream it belongs to."""

    stream: StreamEntry
    entry: FileEntry
    path: Path


@dataclass(frozen=True)
class Archive:
    folder: Path
    manifest: Manifest

    @classmethod
    def open(cls, folder: Path | str) -> Archive:
        """Raises ArchiveError naming the manifest when it is missing or unreadable."""
        path = Path(folder)
        try:
            return cls(path, load_manifest(path))
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ArchiveError(
                f"{path} is not an archive: {path / 'manifest.json'} cannot be read ({error}); "
                "give the folder DIR/EXPERIMENT_ID that download wrote"
            ) from None

    def data_type(self, name: str) -> DataType:
        """The archived data type called `name`; ArchiveError listing those it holds."""
        try:
            data_type = data_type_named(name)
        except KeyError:
            data_type = None
        if data_type is None or data_type.folder not in self.manifest.data_types:
            raise ArchiveError(
                f"{self.folder} holds no data type {name!r}; it holds "
                + ", ".join(self.manifest.data_types)
            )
        return data_type

    def streams(self, data_type: DataType) -> list[StreamEntry]:
        """The data type's stream entries, oldest window first (manifest order within one)."""
        entries = [s for s in self.manifest.streams if s.data_type == data_type.folder]
        return sorted(entries, key=lambda stream: stream.window)

    def incomplete(self, data_type: DataType) -> list[StreamEntry]:
        return [s for s in self.streams(data_type) if s.status != "complete"]

    def require_complete(self, data_type: DataType) -> None:
        """Raises IncompleteDataError naming the data type's streams that are not complete."""
        missing = self.incomplete(data_type)
        if missing:
            names = ", ".join(f"{s.key} ({s.status})" for s in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise IncompleteDataError(
                f"{data_type.folder} in {self.folder} is incomplete: {names}{more}; run download "
                "again to finish it, or pass allow_incomplete=True to read what is there"
            )

    def files(self, stream: StreamEntry) -> list[ListedFile]:
        return [ListedFile(stream, entry, self.folder / entry.path) for entry in stream.files]

    def all_files(self) -> Iterator[ListedFile]:
        """Every NDJSON file the manifest lists, stream by stream."""
        for stream in self.manifest.streams:
            yield from self.files(stream)


def read_lines(path: Path, *, chunk_bytes: int = 1 << 22) -> Iterator[list[bytes]]:
    """The file's lines (newline stripped) in lists of about `chunk_bytes` bytes: a file of any
    size is read with bounded memory, and no line is split between two lists."""
    for block in read_blocks(path, chunk_bytes=chunk_bytes):
        yield block_lines(block)


def read_blocks(path: Path, *, chunk_bytes: int = 1 << 22) -> Iterator[bytes]:
    """The file as blocks of whole lines, each about `chunk_bytes` bytes, for readers that
    parse many lines at once (no line-by-line copy). Each block but the file's last ends with
    a newline."""
    with path.open("rb") as stream:
        rest = b""
        while piece := stream.read(chunk_bytes):
            cut = piece.rfind(b"\n") + 1
            if not cut:
                rest += piece
                continue
            block = rest + memoryview(piece)[:cut]  # one copy of the piece, as `rest + piece`
            rest = piece[cut:]
            yield block
        if rest.strip():
            yield rest


def block_lines(block: bytes) -> list[bytes]:
    """A block's lines, newlines stripped."""
    lines = block.split(b"\n")
    if not lines[-1]:
        lines.pop()
    return lines
