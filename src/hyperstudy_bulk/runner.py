"""One experiment, start to finish: discover -> plan -> fetch under one budget -> write ->
checkpoint -> manifest. The CLI and the library's `download()` are thin layers over
`archive_experiment`.

Streams run on a fixed pool of workers (bounded fan-out, so open files and buffered pages stay
bounded however many rooms there are). Each page is appended, fsynced and checkpointed before
the next is accepted, so a run killed at any moment resumes where it stopped: the same command
finds the manifest and the checkpoints, cuts each open part back to its checkpoint, and asks
only for what was not yet on disk. A stream that fails ends alone and is recorded as
incomplete; a 401 ends the run. Whatever happens, including cancellation, the manifest is saved
with the true state of every stream before this returns or raises.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from hyperstudy_bulk.client import ApiClient
from hyperstudy_bulk.config import Granularity, Settings
from hyperstudy_bulk.datatypes import PARTICIPANTS, ROOMS
from hyperstudy_bulk.errors import ApiError, AuthError, ConfigError, HyperStudyBulkError
from hyperstudy_bulk.manifest import (
    MANIFEST_NAME,
    Checkpoint,
    FileEntry,
    Manifest,
    StreamEntry,
    drop_checkpoint,
    load_checkpoint,
    load_manifest,
)
from hyperstudy_bulk.pager import Chunk, StreamProgress, fetch_stream
from hyperstudy_bulk.pagination import Kept, drop_repeats
from hyperstudy_bulk.plan import Room, StreamSpec, choose_granularity, plan_streams
from hyperstudy_bulk.progress import Monitor
from hyperstudy_bulk.sinks import PART_SUFFIX, FileResult, ResumeMismatch, StreamSink, safe_name

T = TypeVar("T")

ROOMS_LISTING_CAP = 5000
"""The API lists at most this many rooms (contract §3.1): a longer list may be cut short."""
MAX_REFETCHES = 2
"""Times a stream whose records disagree with the server's total is fetched again."""

OnIds = Callable[[Iterable[Any]], None]


class ExperimentNotFound(HyperStudyBulkError):
    """The API does not know the experiment id (404 on its room listing)."""


class IncompleteStream(HyperStudyBulkError):
    """The stream ended without every record the server's total promised."""


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def prepare_folder(out: Path, experiment_id: str) -> Path:
    """The experiment's folder under `out`, checked before any request is made: `out` must be
    a folder (created if missing) we can write in. The experiment folder itself is created by
    the first file written, so a mistyped experiment id leaves nothing behind."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: choose a folder path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create --out {out}: {error.strerror}") from None
    folder = out / safe_name(experiment_id)
    target = folder if folder.exists() else out
    if not os.access(target, os.W_OK | os.X_OK):
        raise ConfigError(f"{target} is not writable: fix its permissions or choose another --out")
    return folder


async def _uninterrupted(work: Callable[[], T]) -> T:
    """Run blocking disk work in a thread; if cancelled meanwhile, let it finish first so no
    file is closed under it, then propagate the cancellation."""
    future = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


def _results(entries: Iterable[FileEntry]) -> list[FileResult]:
    return [FileResult(e.path, e.records, e.bytes, e.sha256) for e in entries]


def _entries(results: Iterable[FileResult]) -> list[FileEntry]:
    return [FileEntry(r.path, r.records, r.bytes, r.sha256) for r in results]


@dataclass
class _Run:
    api: ApiClient
    settings: Settings
    folder: Path
    manifest: Manifest
    monitor: Monitor
    saved_at: float = 0.0
    entries: dict[str, StreamEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.entries = {entry.key: entry for entry in self.manifest.streams}

    def entry_for(self, spec: StreamSpec) -> StreamEntry:
        entry = self.entries.get(spec.key)
        if entry is None:
            entry = StreamEntry(
                key=spec.key,
                data_type=spec.data_type.folder,
                scope=spec.scope.value,
                scope_id=spec.scope_id,
                room_id=spec.room_id,
                params=spec.params(end_time=self.manifest.snapshot_end_time),
            )
            self.manifest.streams.append(entry)
            self.entries[spec.key] = entry
        self.monitor.of(spec.data_type.folder).streams += 1
        return entry

    async def run_stream(
        self, spec: StreamSpec, *, write: bool = True, on_ids: OnIds | None = None
    ) -> HyperStudyBulkError | None:
        """Bring one stream to complete on disk (with write=False only report its ids).

        Returns the error that ended the stream, or None when it is complete. A 401 and
        cancellation are raised instead: they end the run, not just the stream.
        """
        if not write:
            return await self._ids_only(spec, on_ids or (lambda ids: None))
        entry = self.entry_for(spec)
        figures = self.monitor.of(spec.data_type.folder)
        checkpoint = self._checkpoint(spec)
        if checkpoint.complete and entry.status != "complete":
            entry.files, entry.status = checkpoint.files, "complete"
            self._summarise(entry, checkpoint)
        if entry.status == "complete":
            if on_ids is not None:
                on_ids(self._ids_on_disk(spec, entry.files))
            figures.streams_done += 1
            figures.records += entry.records
            figures.expected += entry.records
            return None
        entry.status, entry.error = "pending", None
        entry.started_at = iso_utc(datetime.now(UTC))
        failure: HyperStudyBulkError | None = None
        try:
            failure = await self._fill(spec, entry, checkpoint, on_ids)
        except HyperStudyBulkError as error:
            failure = error
            if isinstance(error, AuthError) and error.status == 401:
                raise
        except BaseException:
            failure = IncompleteStream("interrupted")
            raise
        finally:
            self._record(entry, failure)
        return failure

    async def _fill(
        self, spec: StreamSpec, entry: StreamEntry, checkpoint: Checkpoint, on_ids: OnIds | None
    ) -> HyperStudyBulkError | None:
        """Fetch from the checkpoint on, refetching from scratch (bounded) when the records and
        the server's total disagree; publish the files when they agree."""
        while True:
            sink, checkpoint = self._open_sink(spec, checkpoint)
            try:
                if on_ids is not None:
                    on_ids(self._ids_on_disk(spec, checkpoint.files, checkpoint.part))
                if not checkpoint.done:
                    await self._fetch(spec, entry, checkpoint, sink, on_ids)
                expected = (checkpoint.total or 0) - checkpoint.server_duplicates
                if checkpoint.records == expected:
                    checkpoint.files = _entries(await _uninterrupted(sink.finish))
                    checkpoint.part, checkpoint.complete = None, True
                    await _uninterrupted(functools.partial(checkpoint.save, self.folder))
                    entry.files, entry.status = checkpoint.files, "complete"
                    self._summarise(entry, checkpoint)
                    return None
            finally:
                sink.close()
            self._summarise(entry, checkpoint)
            if checkpoint.refetches >= MAX_REFETCHES:
                return IncompleteStream(
                    f"server total is {checkpoint.total} but {checkpoint.records} distinct "
                    f"records arrived, after {checkpoint.refetches} refetches"
                )
            sink.discard()
            checkpoint = self._fresh(spec, refetches=checkpoint.refetches + 1)

    def _open_sink(self, spec: StreamSpec, checkpoint: Checkpoint) -> tuple[StreamSink, Checkpoint]:
        """The stream's sink, resumed from the checkpoint when its files still match it;
        otherwise (or with nothing to resume) emptied of any earlier files for a fresh start."""
        part_max = self.settings.part_max_mb << 20
        if checkpoint.pages:
            try:
                sink = StreamSink(
                    self.folder,
                    spec.stem,
                    part_max_bytes=part_max,
                    files=_results(checkpoint.files),
                    part=_results([checkpoint.part])[0] if checkpoint.part else None,
                )
                return sink, checkpoint
            except ResumeMismatch:
                checkpoint = self._fresh(spec, refetches=checkpoint.refetches)
        sink = StreamSink(self.folder, spec.stem, part_max_bytes=part_max)
        sink.discard()
        return sink, checkpoint

    def _checkpoint(self, spec: StreamSpec) -> Checkpoint:
        """The stream's checkpoint if it belongs to this archive's snapshot, else a fresh one."""
        saved = load_checkpoint(self.folder, spec.key)
        if saved is not None and saved.end_time == self.manifest.snapshot_end_time:
            return saved
        return self._fresh(spec)

    def _fresh(self, spec: StreamSpec, *, refetches: int = 0) -> Checkpoint:
        return Checkpoint(spec.key, end_time=self.manifest.snapshot_end_time, refetches=refetches)

    async def _fetch(
        self,
        spec: StreamSpec,
        entry: StreamEntry,
        checkpoint: Checkpoint,
        sink: StreamSink,
        on_ids: OnIds | None,
    ) -> None:
        figures = self.monitor.of(spec.data_type.folder)
        progress = StreamProgress(requests=checkpoint.requests, warnings=checkpoint.warnings)
        figures.records += checkpoint.records
        counted_total = False

        async def accept(chunk: Chunk) -> None:
            nonlocal counted_total
            kept = drop_repeats(chunk.ids, set(checkpoint.recent_ids)) if chunk.ids else None
            lines = chunk.lines if kept is None else [chunk.lines[i] for i in kept.indices]
            data = b"".join(lines)
            _advance(checkpoint, chunk, kept, len(lines), progress)

            if not self.saved_at:
                self.save(force=True, create=True)

            def persist() -> None:
                sink.write(data, len(lines))
                checkpoint.files = _entries(sink.files)
                part = sink.open_part
                checkpoint.part = _entries([part])[0] if part else None
                checkpoint.save(self.folder)

            await _uninterrupted(persist)
            figures.records += len(lines)
            figures.bytes += len(data)
            if not counted_total:
                figures.expected += chunk.total
                counted_total = True
            if on_ids is not None:
                on_ids(chunk.ids[i] for i in kept.indices) if kept else on_ids(chunk.ids)
            self.monitor.on_page(spec.data_type.folder, len(lines))

        requests_before = progress.requests
        try:
            await fetch_stream(
                self.api,
                spec,
                spec.params(end_time=self.manifest.snapshot_end_time),
                start=checkpoint.next_offset,
                page_size=self.settings.page_size,
                lookahead=self.settings.concurrency,
                on_chunk=accept,
                progress=progress,
            )
        finally:
            figures.requests += progress.requests - requests_before
            checkpoint.requests = progress.requests
            checkpoint.warnings = progress.warnings

    async def _ids_only(self, spec: StreamSpec, on_ids: OnIds) -> HyperStudyBulkError | None:
        """Page through a stream only to learn its ids (discovery of a type not archived)."""

        async def accept(chunk: Chunk) -> None:
            on_ids(chunk.ids)

        try:
            await fetch_stream(
                self.api,
                spec,
                spec.params(end_time=self.manifest.snapshot_end_time),
                page_size=self.settings.page_size,
                lookahead=self.settings.concurrency,
                on_chunk=accept,
                progress=StreamProgress(),
            )
        except HyperStudyBulkError as error:
            if isinstance(error, AuthError) and error.status == 401:
                raise
            return error
        return None

    def _ids_on_disk(
        self, spec: StreamSpec, files: Iterable[FileEntry], part: FileEntry | None = None
    ) -> list[Any]:
        """The id field of every record already written for the stream (discovery on resume)."""
        field_name = spec.data_type.id_field
        paths = [self.folder / f.path for f in files]
        if part is not None:
            paths.append(self.folder / (part.path + PART_SUFFIX))
        if field_name is None:
            return []
        ids: list[Any] = []
        for path in paths:
            with path.open("rb") as stream:
                ids.extend(orjson.loads(line).get(field_name) for line in stream if line.strip())
        return ids

    def _summarise(self, entry: StreamEntry, checkpoint: Checkpoint) -> None:
        entry.server_total = checkpoint.total
        entry.records = checkpoint.records
        entry.pages = checkpoint.pages
        entry.requests = checkpoint.requests
        entry.duplicates_dropped = checkpoint.duplicates
        entry.server_duplicates = checkpoint.server_duplicates
        entry.refetches = checkpoint.refetches
        entry.warnings = checkpoint.warnings
        entry.bytes = sum(f.bytes for f in entry.files)
        entry.open_part = checkpoint.part.path + PART_SUFFIX if checkpoint.part else None

    def _record(self, entry: StreamEntry, failure: HyperStudyBulkError | None) -> None:
        figures = self.monitor.of(entry.data_type)
        if failure is not None:
            entry.status = "incomplete"
            entry.error = str(failure)
        entry.finished_at = iso_utc(datetime.now(UTC))
        figures.streams_done += 1
        figures.incomplete += entry.status != "complete"
        self.save(force=False)

    def save(self, *, force: bool, create: bool = False) -> None:
        """Save the manifest at most once a second while running, and always when forced.
        Until the first page is about to be written (`create`) there is nothing to describe:
        a run refused at its first request leaves no folder behind."""
        now = time.monotonic()
        if not (create or self.folder.exists()):
            return
        if force or now - self.saved_at >= 1.0:
            self.manifest.updated_at = iso_utc(datetime.now(UTC))
            self.manifest.complete = bool(self.manifest.streams) and not (
                self.manifest.incomplete_streams
            )
            stats = self.api.stats
            self.manifest.requests = {
                "sent": stats.requests,
                "by_status": {str(k): v for k, v in sorted(stats.by_status.items())},
                "retries": dict(stats.retries),
                "rate_limited": self.api.budget.counters.rate_limited,
                "paused_seconds": round(self.api.budget.counters.paused_seconds, 3),
            }
            self.manifest.save(self.folder)
            self.saved_at = now


def _advance(
    checkpoint: Checkpoint, chunk: Chunk, kept: Kept | None, written: int, progress: StreamProgress
) -> None:
    """Move the checkpoint past `chunk` (before it is saved, after the data is durable)."""
    checkpoint.next_offset = chunk.end
    checkpoint.done = not chunk.has_more
    checkpoint.total = chunk.total
    checkpoint.pages += 1
    checkpoint.records += written
    checkpoint.requests = progress.requests
    checkpoint.warnings = progress.warnings
    if kept is not None:
        checkpoint.duplicates += kept.repeated
        checkpoint.server_duplicates += kept.server_repeated
    checkpoint.recent_ids = [i for i in chunk.ids if isinstance(i, str | int)]


def _existing_manifest(folder: Path) -> Manifest | None:
    if not (folder / MANIFEST_NAME).exists():
        return None
    try:
        return load_manifest(folder)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ConfigError(
            f"{folder / MANIFEST_NAME} cannot be read ({error}); move the folder aside or "
            "choose another --out"
        ) from None


async def archive_experiment(
    api: ApiClient,
    settings: Settings,
    experiment_id: str,
    *,
    monitor: Monitor,
    now: datetime | None = None,
) -> Manifest:
    """Archive one experiment into `settings.out/<experiment>`, or resume an unfinished archive
    there; returns the saved manifest.

    Raises ExperimentNotFound (before anything is written), ConfigError (output folder, an
    impossible granularity, a granularity unlike the archive's) and AuthError for a 401; every
    other failure ends only its stream and is recorded in the manifest.
    """
    folder = prepare_folder(settings.out, experiment_id)
    started = iso_utc(now or datetime.now(UTC))
    manifest = _existing_manifest(folder) or Manifest(
        experiment_id=experiment_id,
        base_url=settings.base_url,
        snapshot_end_time=started,
        granularity=settings.granularity.value,
        page_size=settings.page_size,
        data_types=[dt.folder for dt in settings.data_types],
        created_at=started,
        updated_at=started,
    )
    requested = settings.granularity
    if manifest.granularity not in (Granularity.AUTO.value, requested.value) and (
        requested is not Granularity.AUTO
    ):
        raise ConfigError(
            f"{folder} was archived at granularity {manifest.granularity}; resume it with "
            f"--granularity {manifest.granularity} (or auto), or choose another --out"
        )
    manifest.data_types = list(
        dict.fromkeys([*manifest.data_types, *(dt.folder for dt in settings.data_types)])
    )
    monitor.experiment_id = experiment_id
    run = _Run(api, settings, folder, manifest, monitor)
    try:
        rooms, rooms_complete = await _discover_rooms(run)
        if manifest.granularity != Granularity.AUTO.value:
            requested = Granularity(manifest.granularity)
        granularity = choose_granularity(
            requested,
            settings.data_types,
            rooms,
            totals={},
            page_size=settings.page_size,
            rooms_complete=rooms_complete,
        )
        if granularity is not Granularity.EXPERIMENT and not rooms_complete:
            raise ConfigError(
                f"--granularity {granularity} needs the full room list of {experiment_id!r}, "
                "which the API did not give; use --granularity experiment"
            )
        manifest.granularity = granularity.value
        if granularity is Granularity.PARTICIPANT:
            rooms = await _discover_participants(run, rooms)
        discovered = {ROOMS, PARTICIPANTS} if granularity is Granularity.PARTICIPANT else {ROOMS}
        await _run_all(
            run,
            [
                spec
                for spec in plan_streams(experiment_id, settings.data_types, granularity, rooms)
                if spec.data_type not in discovered
            ],
        )
    except ExperimentNotFound:
        raise
    except BaseException:
        run.save(force=True)
        raise
    run.save(force=True)
    for entry in manifest.streams:
        if entry.status == "complete":
            drop_checkpoint(folder, entry.key)
    return manifest


async def _discover_rooms(run: _Run) -> tuple[list[Room], bool]:
    """List the rooms (archiving the listing when rooms are wanted). The second value says
    whether the list is complete: the API caps it, and the listing may have failed."""
    experiment_id = run.manifest.experiment_id
    spec = plan_streams(experiment_id, [ROOMS], Granularity.EXPERIMENT, [])[0]
    ids: list[str] = []

    def collect(found: Iterable[Any]) -> None:
        ids.extend(str(i) for i in found if i is not None)

    failure = await run.run_stream(spec, write=ROOMS in run.settings.data_types, on_ids=collect)
    if isinstance(failure, ApiError) and failure.status == 404:
        raise ExperimentNotFound(
            f"experiment {experiment_id!r} was not found (HTTP 404): check the id"
        )
    unique = list(dict.fromkeys(ids))
    complete = failure is None and len(unique) < ROOMS_LISTING_CAP
    return [Room(room_id) for room_id in unique], complete


async def _discover_participants(run: _Run, rooms: Sequence[Room]) -> list[Room]:
    """Each room's participants, from its participant listing (archived when wanted)."""
    found: dict[str, list[str]] = {room.id: [] for room in rooms}
    write = PARTICIPANTS in run.settings.data_types

    async def one(spec: StreamSpec) -> None:
        def collect(ids: Iterable[Any]) -> None:
            found[spec.scope_id].extend(str(i) for i in ids if i is not None)

        failure = await run.run_stream(spec, write=write, on_ids=collect)
        if failure is not None:
            raise ConfigError(
                f"cannot list the participants of room {spec.scope_id!r} ({failure}); "
                "use --granularity room or experiment"
            )

    specs = plan_streams(run.manifest.experiment_id, [PARTICIPANTS], Granularity.ROOM, rooms)
    await _run_all(run, specs, job=one)
    return [Room(room_id, tuple(dict.fromkeys(ids))) for room_id, ids in found.items()]


async def _run_all(
    run: _Run,
    specs: Sequence[StreamSpec],
    job: Callable[[StreamSpec], Awaitable[object]] | None = None,
) -> None:
    """Run `specs` on at most `concurrency` workers; the first exception a job raises cancels
    the others and is raised as itself."""
    queue = deque(specs)
    work = job or run.run_stream

    async def drain() -> None:
        while queue:
            await work(queue.popleft())

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(run.settings.concurrency, len(queue))):
                group.create_task(drain())
    except BaseExceptionGroup as failures:
        raise _first_leaf(failures) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


__all__ = ["ExperimentNotFound", "IncompleteStream", "archive_experiment", "prepare_folder"]
