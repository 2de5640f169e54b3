"""Recording media: the video or audio file behind every archived recording row.

Planning (`plan_media`) is pure: recording rows in, one `MediaJob` per recording out, with a
safe path under `media/<room>/` and the way to obtain a signed URL. The I/O (`MediaFetcher`)
streams each file to `<path>.part`, hashing as it goes, resumes a part with `Range`, checks the
size against `fileSize` and Content-Length, and renames into place only once whole and fsynced.

Signed URLs are bearer credentials. They are fetched with a session that never holds the API
key (so neither the media host nor a redirect can see it), and they are never stored in the
manifest nor shown in messages. Minting one (`GET downloadPath` with the key) goes through the
ApiClient, so it counts against the shared request budget; the transfers themselves do not.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import aiohttp
import orjson

from hyperstudy_bulk.client import ApiClient, SessionHolder, new_session
from hyperstudy_bulk.config import Settings, is_loopback
from hyperstudy_bulk.errors import (
    ApiError,
    ContractError,
    HyperStudyBulkError,
    StorageError,
    TransportError,
)
from hyperstudy_bulk.manifest import Manifest, MediaEntry, fsync_directory
from hyperstudy_bulk.progress import MediaProgress
from hyperstudy_bulk.retry import RetryPolicy, call_with_retries
from hyperstudy_bulk.sinks import PART_SUFFIX, safe_name

MEDIA_DIR = "media"
MINT_ENDPOINT = "data/recordings/download"
"""The budget's endpoint name for minting signed URLs."""
MINT_ROUTE = ("data", "recordings", "download")
CHUNK = 256 * 1024
REFUSED = frozenset({400, 401, 403, 410})
"""What a storage host answers to an expired or otherwise unusable signature."""
_NAME_BYTES = {"who": 60, "kind": 20, "format": 12}
"""Bytes each part of a file name may take besides the recording id (itself at most MAX_NAME):
with the separators, a case hash and `.part`, a name stays within 255 bytes."""


# -- planning (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaJob:
    """One file to fetch. `url` is the row's embedded signed URL, if any: a credential, so it
    is kept out of repr and never written anywhere."""

    recording_id: str
    room_id: str
    path: str
    file_size: int | None
    mint: tuple[str, ...] | None
    """API path segments that mint a fresh signed URL (None: the row names no route)."""
    url: str | None = field(default=None, repr=False)
    recording_status: str | None = None
    """The row's `status` (e.g. failed), kept to say why a recording has no file."""

    @property
    def has_file(self) -> bool:
        """A row with neither a downloadPath nor a signed URL has no file behind it (its
        egress failed): there is nothing to mint or fetch, and guessing a route would only
        earn a 404 on every run."""
        return self.url is not None or self.mint is not None


def plan_media(rows: Iterable[Mapping[str, Any]]) -> list[MediaJob]:
    """One job per distinct (room, recording) among `rows`, in first-seen order. Rows without
    a recording id or room id cannot be fetched or named and are left out."""
    jobs: dict[tuple[str, str], MediaJob] = {}
    for row in rows:
        job = _job(row)
        if job is not None:
            jobs.setdefault((job.room_id, job.recording_id), job)
    return _disambiguate_case(list(jobs.values()))


def _job(row: Mapping[str, Any]) -> MediaJob | None:
    recording_id, room_id = _text(row.get("recordingId")), _text(row.get("roomId"))
    if not recording_id or not room_id:
        return None
    size = row.get("fileSize")
    url = _signed_url(row)
    return MediaJob(
        recording_id=recording_id,
        room_id=room_id,
        path=f"{MEDIA_DIR}/{safe_name(room_id)}/{media_name(row, recording_id)}",
        file_size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        mint=_mint_route(row.get("downloadPath"), room_id, recording_id, has_url=url is not None),
        url=url,
        recording_status=_text(row.get("status")),
    )


def media_name(row: Mapping[str, Any], recording_id: str) -> str:
    """`participantName_type_recordingId.format` as the official SDK names files, every part
    made safe; the format falls back to mp4 for video and webm for audio, like the SDK's."""
    metadata = row.get("metadata")
    kind = _text(metadata.get("type")) if isinstance(metadata, Mapping) else None
    kind = kind or "video"
    fmt = _text(row.get("format")) or ("webm" if kind == "audio" else "mp4")
    who = _text(row.get("participantName")) or _text(row.get("participantId")) or "unknown"
    return (
        f"{safe_name(who, _NAME_BYTES['who'])}_{safe_name(kind, _NAME_BYTES['kind'])}_"
        f"{safe_name(recording_id)}.{safe_name(fmt, _NAME_BYTES['format'])}"
    )


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _signed_url(row: Mapping[str, Any]) -> str | None:
    """The embedded signed URL of an older row: downloadUrl, else url."""
    for name in ("downloadUrl", "url"):
        value = row.get(name)
        if isinstance(value, str) and urlsplit(value).scheme in ("http", "https"):
            return value
    return None


def _mint_route(
    download_path: object, room_id: str, recording_id: str, *, has_url: bool
) -> tuple[str, ...] | None:
    """The segments of `downloadPath` when it is the documented route, else that route built
    from the row's ids (the key is only ever sent to that route of the base URL). None when
    the row has neither a downloadPath nor a signed URL: it has no file."""
    if isinstance(download_path, str) and download_path.strip("/"):
        segments = download_path.strip("/").split("/")
        if len(segments) == 5 and tuple(segments[:3]) == MINT_ROUTE:
            return (*MINT_ROUTE, unquote(segments[3]), unquote(segments[4]))
    elif not has_url:
        return None
    return (*MINT_ROUTE, room_id, recording_id)


def _disambiguate_case(jobs: list[MediaJob]) -> list[MediaJob]:
    """On case-insensitive file systems two paths differing only by case are one file: give
    such paths a hash of their recording's identity."""
    folded = Counter(job.path.casefold() for job in jobs)
    return [job if folded[job.path.casefold()] == 1 else _with_hash(job) for job in jobs]


def _with_hash(job: MediaJob) -> MediaJob:
    digest = hashlib.sha256(f"{job.room_id}/{job.recording_id}".encode()).hexdigest()[:12]
    stem, dot, fmt = job.path.rpartition(".")
    return replace(job, path=f"{stem}~{digest}{dot}{fmt}")


def recording_rows(folder: Path, manifest: Manifest) -> Iterator[dict[str, Any]]:
    """Every recording row in the archive's recordings files listed in its manifest."""
    for stream in manifest.streams:
        if stream.data_type != "recordings":
            continue
        for file in stream.files:
            with (folder / file.path).open("rb") as lines:
                for line in lines:
                    row = orjson.loads(line)
                    if isinstance(row, dict):
                        yield row


# -- I/O --------------------------------------------------------------------------------------


def _minted(job: MediaJob) -> bool:
    """Whether the file needs a signed URL minted (a request under the budget)."""
    return job.url is None and job.mint is not None


class MediaError(HyperStudyBulkError):
    """A file that cannot be fetched whatever we try (e.g. its size disagrees with fileSize)."""


class UrlRefused(HyperStudyBulkError):
    """The storage host refused the signed URL (expired or revoked): mint a fresh one."""


class PartFile:
    """`<final>.part` being filled, with the sha256 of exactly its bytes so far. Opening it
    keeps what an earlier run fetched and re-hashes that prefix, so the final hash covers the
    whole file."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = final.with_name(final.name + PART_SUFFIX)
        self.size = 0
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")
        with self.path.open("rb") as kept:
            while piece := kept.read(CHUNK):
                self._hash.update(piece)
                self.size += len(piece)

    def restart(self) -> None:
        """Drop what is there: the next bytes start the file."""
        assert self._file is not None
        self._file.truncate(0)
        self._file.seek(0)
        self.size, self._hash = 0, hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        assert self._file is not None
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def publish(self) -> str:
        """fsync, rename into place, and return the sha256."""
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self.close()
        os.replace(self.path, self.final)
        fsync_directory(self.final.parent)
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self) -> None:
        """Remove the part: its bytes can never become the file."""
        self.close()
        self.path.unlink(missing_ok=True)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header; None where absent or unknown."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    first = span.partition("-")[0]
    return (
        int(first) if first.isdigit() else None,
        int(total) if total.isdigit() else None,
    )


@contextmanager
def _transport_errors() -> Iterator[None]:
    """aiohttp failures as TransportError, worded without the URL (it holds a signature)."""
    try:
        yield
    except TimeoutError:
        raise TransportError("media transfer timed out", cause="media-timeout") from None
    except aiohttp.ClientPayloadError:
        raise TransportError("media body cut short", cause="media-truncated") from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        raise TransportError("media connection reset", cause="media-reset") from None
    except aiohttp.ClientError as error:
        raise TransportError(
            f"media host unreachable ({type(error).__name__})", cause="media-connection"
        ) from None


class MediaFetcher(SessionHolder):
    """Fetches planned files, `media_concurrency` at a time, over its own session (which never
    carries the API key). `async with MediaFetcher(...) as fetcher: await fetcher.run(...)`."""

    def __init__(
        self,
        api: ApiClient,
        settings: Settings,
        folder: Path,
        progress: MediaProgress,
        *,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._api = api
        self._settings = settings
        self._folder = folder
        self._progress = progress
        self._log = log
        self._retry = RetryPolicy.from_settings(settings)

    def _new_session(self) -> aiohttp.ClientSession:
        return new_session(
            pool=self._settings.media_concurrency,
            connect_timeout=self._settings.connect_timeout,
            read_timeout=self._settings.timeout,
            auto_decompress=False,
        )

    def expect(self, jobs: Sequence[MediaJob]) -> None:
        """Tell the progress figures what is to come, up front: the sum of the known
        fileSizes, and for a row without one the mean of those (replaced by its true size
        once a response tells it), so the total does not grow as the run goes."""
        sizes = [job.file_size for job in jobs if job.has_file]
        known = [size for size in sizes if size is not None]
        progress = self._progress
        progress.guessed_size = sum(known) // len(known) if known else 0
        progress.files += len(sizes)
        progress.mints_left += sum(map(_minted, jobs))
        progress.mint_endpoint = MINT_ENDPOINT
        progress.expected += sum(known) + progress.guessed_size * (len(sizes) - len(known))

    async def fetch(self, job: MediaJob, entry: MediaEntry) -> None:
        """Fetch one file into place and describe it in `entry`. A 401 (the key was refused)
        is raised; every other failure ends only this file and is recorded in `entry`."""
        try:
            await self._fetch(job, entry)
        finally:
            if _minted(job):
                self._progress.mints_left -= 1

    async def _fetch(self, job: MediaJob, entry: MediaEntry) -> None:
        progress = self._progress
        final = self._folder / job.path
        if not job.has_file:
            entry.status, entry.error, entry.bytes, entry.sha256 = "unavailable", None, 0, ""
            entry.recording_status = job.recording_status
            progress.unavailable += 1
            return
        if entry.status == "complete" and final.is_file() and final.stat().st_size == entry.bytes:
            progress.files_done += 1
            progress.bytes += entry.bytes
            progress.expected += entry.bytes - progress.guessed_size if job.file_size is None else 0
            return
        if progress.started is None:
            progress.started = time.monotonic()
        part = PartFile(final)
        entry.status, entry.error = "pending", None
        try:
            await asyncio.to_thread(part.open)
            progress.bytes += part.size
            await self._download(job, part)
            entry.sha256 = await asyncio.to_thread(part.publish)
        except (MediaError, TransportError, ContractError, UrlRefused) as error:
            self._failed(entry, part, error)
            return
        except ApiError as error:
            if error.status == 401:
                raise
            self._failed(entry, part, error)
            return
        except OSError as error:
            if isinstance(error, TimeoutError | aiohttp.ClientError):
                raise
            # The disk, not this file: every other file would fail alike, so the run ends.
            raise StorageError.from_os_error(error) from None
        finally:
            part.close()
        entry.bytes, entry.status = part.size, "complete"
        progress.files_done += 1

    def _failed(self, entry: MediaEntry, part: PartFile, error: HyperStudyBulkError) -> None:
        """Record the failure; a part that cannot become the file is dropped, any other is
        kept for the next run to resume."""
        if isinstance(error, MediaError):
            self._progress.bytes -= part.size
            part.discard()
            part.size = 0
        entry.status, entry.error = "failed", str(error)
        entry.bytes = part.size
        self._progress.failed += 1
        self._log(f"media {entry.recording_id} failed: {error}")

    async def _download(self, job: MediaJob, part: PartFile) -> None:
        """Transfer with retries; a refused URL is replaced by a freshly minted one, up to
        `max_attempts` signed URLs per file."""
        given = job.url
        for tries in range(1, self._retry.max_attempts + 1):
            url = given or await self._mint(job)
            try:
                await call_with_retries(
                    functools.partial(self._transfer, url, job, part),
                    self._retry,
                    on_retry=functools.partial(self._on_retry, job.recording_id),
                )
                return
            except UrlRefused:
                if tries == self._retry.max_attempts:
                    raise
                self._log(f"media {job.recording_id}: signed URL refused, minting a fresh one")
                given = None

    async def _mint(self, job: MediaJob) -> str:
        if job.mint is None:
            raise UrlRefused(f"recording {job.recording_id!r} has no download route to mint")
        self._progress.requests += 1
        data = await self._api.get_object(MINT_ENDPOINT, job.mint)
        url = data.get("url")
        if not isinstance(url, str) or not self._allowed(url):
            raise ContractError(
                f"the download route of recording {job.recording_id!r} gave no usable https URL"
            )
        return url

    def _allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme == "https":
            return bool(parts.hostname)
        return parts.scheme == "http" and (
            self._settings.allow_insecure_http or is_loopback(parts.hostname or "")
        )

    async def _transfer(self, url: str, job: MediaJob, part: PartFile) -> None:
        """One GET of the rest of the file (Range from what `part` holds); raises to retry."""
        assert self._session is not None, "use `async with MediaFetcher(...)`"
        if job.file_size is not None and part.size > job.file_size:
            self._restart(part)
        offset = part.size
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with _transport_errors():
            async with self._session.get(url, headers=headers) as response:
                total = self._start(response, job, part, offset)
                if total is None or part.size < total:
                    await self._stream(response, part)
        if total is not None and part.size != total:
            if part.size > total:
                self._restart(part)
            raise TransportError(
                f"media body ended at {part.size} of {total} bytes", cause="media-truncated"
            )

    def _start(
        self, response: aiohttp.ClientResponse, job: MediaJob, part: PartFile, offset: int
    ) -> int | None:
        """Check the response's status and size and position `part` for its body; returns the
        file's total size when known."""
        status = response.status
        if status in REFUSED:
            raise UrlRefused(f"the storage host refused the signed URL (HTTP {status})")
        if status >= 500 or status == 429:
            raise ApiError(f"the storage host answered HTTP {status}", status=status)
        if status == 416:
            return self._check_whole(response, job, part)
        if status not in (200, 206):
            raise MediaError(f"the storage host answered HTTP {status}")
        first, total = _content_range(response.headers.get("Content-Range"))
        if status == 206 and first != offset:
            self._restart(part)
            raise TransportError(f"range started at {first}, not {offset}", cause="media-range")
        if status == 200:
            self._restart(part)
            total = response.content_length
        self._check_size(job, total)
        if job.file_size is None and total is not None:
            self._progress.expected += total - self._progress.guessed_size
        return total if total is not None else job.file_size

    def _check_whole(self, response: aiohttp.ClientResponse, job: MediaJob, part: PartFile) -> int:
        """A 416: the part may already hold the whole file; otherwise start over."""
        total = _content_range(response.headers.get("Content-Range"))[1]
        self._check_size(job, total)
        if total is not None and part.size == total:
            return total
        self._restart(part)
        raise TransportError("range not satisfiable; starting over", cause="media-range")

    def _check_size(self, job: MediaJob, total: int | None) -> None:
        if job.file_size is not None and total is not None and total != job.file_size:
            raise MediaError(
                f"the storage host has {total:,} bytes but the recording's fileSize is "
                f"{job.file_size:,}"
            )

    async def _stream(self, response: aiohttp.ClientResponse, part: PartFile) -> None:
        progress = self._progress
        async for chunk in response.content.iter_chunked(CHUNK):
            part.write(chunk)
            progress.bytes += len(chunk)
            progress.received += len(chunk)

    def _restart(self, part: PartFile) -> None:
        self._progress.bytes -= part.size
        part.restart()

    def _on_retry(self, recording_id: str, cause: str, wait: float) -> None:
        self._api.stats.retries[cause] += 1
        self._log(f"media {recording_id}: retrying after {cause} in {wait:.1f} s")


def media_entries(
    manifest: Manifest, jobs: Iterable[MediaJob]
) -> list[tuple[MediaJob, MediaEntry]]:
    """Each job with its manifest entry, adding entries for recordings new to the manifest.
    A recording the manifest knows keeps its path."""
    known = {(entry.room_id, entry.recording_id): entry for entry in manifest.media}
    paired: list[tuple[MediaJob, MediaEntry]] = []
    for job in jobs:
        entry = known.get((job.room_id, job.recording_id))
        if entry is None:
            entry = MediaEntry(job.recording_id, job.room_id, job.path, job.file_size)
            manifest.media.append(entry)
        else:  # the file keeps its name, even one an earlier version or a renamed row gave it
            job = replace(job, path=entry.path)
        entry.file_size = job.file_size
        paired.append((job, entry))
    return paired


__all__ = [
    "MediaEntry",
    "MediaFetcher",
    "MediaJob",
    "media_entries",
    "media_name",
    "plan_media",
    "recording_rows",
]
