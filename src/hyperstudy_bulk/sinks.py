"""Where records go: NDJSON part files written as pages arrive, and safe names for them.

A part is written as `<name>.ndjson.part` and renamed to `<name>.ndjson` only once it is
complete and fsynced, so a reader that globs `*.ndjson` never sees a partial file. Records are
re-encoded one per line with orjson: the same JSON values, keys and order the API sent.
Knows nothing of HTTP.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import orjson

from hyperstudy_bulk.manifest import fsync_directory

if TYPE_CHECKING:
    from typing_extensions import Buffer

PART_SUFFIX = ".part"
MAX_NAME = 120
"""Bytes of UTF-8 a name may take: room for prefixes and suffixes within the 255 bytes that
common file systems allow, whatever the script."""
_DIGEST = 16
_KEPT = frozenset("-_.,()+=@ ")
"""Punctuation safe on every common file system (`%` and `~` are ours: escape and hash marks)."""
_NOT_AT_ENDS = frozenset(". ")
"""A leading dot hides a file; a trailing dot or space is dropped by Windows."""
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{port}{n}" for port in ("COM", "LPT") for n in range(1, 10)}
)
"""Device names Windows will not create as files, with any extension."""


def safe_name(identifier: str, max_bytes: int = MAX_NAME) -> str:
    """A file-name component for an untrusted id: readable, never a path, never hidden.

    The id is put in NFC; letters, marks and digits of every script and the punctuation in
    `_KEPT` stay as they are; every other character (`/`, `\\`, `:`, `%`, control and format
    characters, a leading dot, ...) becomes %XX escapes of its UTF-8 bytes, so `unquote` gives
    the id back. A name longer than `max_bytes` is cut between characters (never inside one
    or its escape, never before a combining mark) and, like an id that was not in NFC, ends in
    `~` and a hash of the whole id, so names stay unique; the manifest maps every file back.
    """
    text = unicodedata.normalize("NFC", identifier)
    tokens = [
        _token(char, at_an_end=at in (0, len(text) - 1), after_dot=text[at - 1 : at] == ".")
        for at, char in enumerate(text)
    ]
    if tokens and text.split(".")[0].upper() in _RESERVED:
        tokens[0] = _escape(text[0])
    if not tokens:
        tokens = ["%00empty"]
    whole = "".join(tokens)
    if text == identifier and len(_utf8(whole)) <= max_bytes:
        return whole
    kept, used = 0, 0
    room = max_bytes - _DIGEST - 1
    while kept < len(tokens) and used + len(_utf8(tokens[kept])) <= room:
        used += len(_utf8(tokens[kept]))
        kept += 1
    while 0 < kept < len(text) and unicodedata.category(text[kept]).startswith("M"):
        kept -= 1
    digest = hashlib.sha256(_utf8(identifier)).hexdigest()[:_DIGEST]
    return "".join(tokens[:kept]) + "~" + digest


def _token(char: str, *, at_an_end: bool, after_dot: bool) -> str:
    """`char` as it appears in a name: itself when safe there, else its escapes (a dot after
    a dot too, so no name holds '..')."""
    doubled_dot = after_dot and char == "."
    if char in _KEPT and not (char in _NOT_AT_ENDS and at_an_end) and not doubled_dot:
        return char
    if char.isascii():
        return char if char.isalnum() else _escape(char)
    return char if unicodedata.category(char)[0] in "LMN" else _escape(char)


def _escape(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in _utf8(char))


def legacy_name(identifier: str) -> str:
    """The name version 0.1.0 gave an id (every character outside [A-Za-z0-9_-]
    percent-encoded, cut at 120 characters): to find the archive folders it made."""
    encoded = "".join(
        char if char.isascii() and (char.isalnum() or char in "_-") else _escape(char)
        for char in identifier
    )
    if not encoded:
        encoded = "%00empty"
    if len(encoded) > MAX_NAME:
        digest = hashlib.sha256(_utf8(identifier)).hexdigest()[:16]
        encoded = f"{encoded[: MAX_NAME - 18]}~{digest}"
    return encoded


def _utf8(text: str) -> bytes:
    """UTF-8, keeping lone surrogates (a JSON id may hold one) so the encoding stays reversible."""
    return text.encode("utf-8", "surrogatepass")


def ndjson(records: Sequence[Buffer]) -> bytes:
    """NDJSON bytes: each record's JSON text as served, one per line. A record whose text
    holds a line break (a server that pretty-prints) is re-encoded compactly, keeping its keys,
    their order and values, so every record stays on exactly one line."""
    if not records:
        return b""
    joined = b"\n".join([*records, b""])  # the empty last item ends the last line
    if joined.count(b"\n") == len(records) and b"\r" not in joined:
        return joined
    return b"".join(
        orjson.dumps(orjson.loads(memoryview(record)), option=orjson.OPT_APPEND_NEWLINE)
        for record in records
    )


@dataclass(frozen=True)
class FileResult:
    """A file's path relative to the archive, and what it holds (so far, for an open part)."""

    path: str
    records: int
    bytes: int
    sha256: str


class ResumeMismatch(Exception):
    """An open part on disk no longer matches its checkpoint: the stream must start over."""


class PartWriter:
    """Appends NDJSON to `<path>.part`, hashing as it goes; `finish()` makes it `<path>`.

    Given `resume` (the checkpointed state of this part), the `.part` file is cut back to the
    checkpointed length (dropping a torn last line or an unrecorded page) and its content is
    re-hashed; ResumeMismatch is raised if it is shorter or its hash differs.
    """

    def __init__(self, root: Path, relative: str, *, resume: FileResult | None = None) -> None:
        self.relative = relative
        self._final = root / relative
        self._final.parent.mkdir(parents=True, exist_ok=True)
        self._temp = self._final.with_name(self._final.name + PART_SUFFIX)
        self._hash = hashlib.sha256()
        self.records = 0
        self.bytes = 0
        self._file: BinaryIO
        if resume is None:
            self._file = self._temp.open("wb")
            return
        if not self._temp.exists() and self._final.exists():
            # Published after its checkpoint was saved (a crash between the rename and the
            # next checkpoint): nothing records it as published, so it is taken back.
            os.replace(self._final, self._temp)
        try:
            self._file = self._temp.open("r+b")
        except FileNotFoundError:
            if resume.bytes:
                raise ResumeMismatch(f"{self._temp.name} is missing") from None
            self._file = self._temp.open("wb")  # claimed, then interrupted before it was opened
        self._file.seek(0, os.SEEK_END)
        if self._file.tell() < resume.bytes:
            self._file.close()
            raise ResumeMismatch(f"{self._temp.name} is shorter than its checkpoint")
        self._file.truncate(resume.bytes)
        self._file.seek(0)
        for block in iter(lambda: self._file.read(1 << 20), b""):
            self._hash.update(block)
        if self._hash.hexdigest() != resume.sha256:
            self._file.close()
            raise ResumeMismatch(f"{self._temp.name} does not match its checkpoint")
        self.records = resume.records
        self.bytes = resume.bytes

    def write(self, chunk: bytes, records: int) -> None:
        """Append (durable only after `sync`)."""
        self._file.write(chunk)
        self._hash.update(chunk)
        self.records += records
        self.bytes += len(chunk)

    def sync(self) -> None:
        """Make everything written so far durable (before a checkpoint may refer to it)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def state(self) -> FileResult:
        return FileResult(self.relative, self.records, self.bytes, self._hash.hexdigest())

    def finish(self) -> FileResult:
        """Flush, fsync, rename into place and fsync the folder, so that whatever records the
        file afterwards never names a file a power loss could take back."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self._final)
        fsync_directory(self._final.parent)
        return self.state()

    def close(self) -> None:
        """Close without publishing: the `.part` stays for a later resume."""
        if not self._file.closed:
            self._file.close()


class StreamSink:
    """All the files of one stream window: parts `<stem>-NNNNN.ndjson`, each up to
    `part_max_bytes` (a page is never split across parts). The numbers come from `claim`,
    which records each before its file is opened (see part_files.PartNumbers), so a sink never
    opens a file another window or an earlier attempt may still need. `files` and `part`
    resume a sink from its checkpoint."""

    def __init__(
        self,
        root: Path,
        stem: str,
        *,
        part_max_bytes: int,
        claim: Callable[[], int],
        files: list[FileResult] | None = None,
        part: FileResult | None = None,
        empty_file: bool = True,
    ) -> None:
        self._root = root
        self._stem = stem
        self._part_max = part_max_bytes
        self._claim = claim
        self._empty_file = empty_file
        self.files: list[FileResult] = list(files or [])
        self._writer = PartWriter(root, part.path, resume=part) if part else None
        self.claimed = 0
        """The highest part number this sink has claimed (0: none)."""

    def _open(self) -> PartWriter:
        self.claimed = self._claim()
        return PartWriter(self._root, part_name(self._stem, self.claimed))

    def write(self, ndjson: bytes, records: int) -> None:
        """Append one page's NDJSON (an empty page opens no file); durable after `sync`, or
        once its part is finished."""
        if not ndjson:
            return
        if self._writer is None:
            self._writer = self._open()
        self._writer.write(ndjson, records)
        if self._writer.bytes >= self._part_max:
            self.files.append(self._writer.finish())
            self._writer = None

    def sync(self) -> None:
        if self._writer is not None:
            self._writer.sync()

    @property
    def open_part(self) -> FileResult | None:
        return self._writer.state() if self._writer else None

    def finish(self) -> list[FileResult]:
        """Publish the last part. A stream that held nothing still gets one empty file when
        `empty_file` (the archive shows it was fetched); a later window that brought nothing
        adds no file."""
        if self._writer is not None or (not self.files and self._empty_file):
            writer = self._writer or self._open()
            self.files.append(writer.finish())
            self._writer = None
        return self.files

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def discard(self) -> None:
        """Delete this sink's own files, published or not (its attempt is abandoned)."""
        part = self._writer.relative if self._writer else None
        self.close()
        for relative in [*(result.path for result in self.files), part]:
            if relative is not None:
                (self._root / relative).unlink(missing_ok=True)
                (self._root / (relative + PART_SUFFIX)).unlink(missing_ok=True)
        self.files = []


def part_name(stem: str, number: int) -> str:
    """The archive-relative path of part `number` of the stream whose files start with `stem`."""
    return f"{stem}-{number:05d}.ndjson"
