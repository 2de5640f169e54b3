"""One experiment, start to finish: discover -> plan -> fetch under one budget -> write ->
manifest. The CLI and the library's `download()` are thin layers over `archive_experiment`.

Streams run on a fixed pool of workers (bounded fan-out, so open files and buffered pages stay
bounded however many rooms there are). A stream that fails ends alone and is recorded as
incomplete; a 401 ends the run. Whatever happens, including cancellation, the manifest is saved
with the true state of every stream before this returns or raises.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hyperstudy_bulk.client import ApiClient
from hyperstudy_bulk.config import Granularity, Settings
from hyperstudy_bulk.datatypes import PARTICIPANTS, ROOMS
from hyperstudy_bulk.errors import ApiError, AuthError, ConfigError, HyperStudyBulkError
from hyperstudy_bulk.manifest import FileEntry, Manifest, StreamEntry
from hyperstudy_bulk.pager import Chunk, StreamProgress, fetch_stream
from hyperstudy_bulk.plan import Room, StreamSpec, choose_granularity, plan_streams
from hyperstudy_bulk.progress import Monitor
from hyperstudy_bulk.sinks import StreamSink, safe_name

ROOMS_LISTING_CAP = 5000
"""The API lists at most this many rooms (contract §3.1): a longer list may be cut short."""


class ExperimentNotFound(HyperStudyBulkError):
    """The API does not know the experiment id (404 on its room listing)."""


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


@dataclass
class _Run:
    api: ApiClient
    settings: Settings
    folder: Path
    manifest: Manifest
    monitor: Monitor
    saved_at: float = 0.0

    def entry_for(self, spec: StreamSpec) -> StreamEntry:
        entry = StreamEntry(
            key=spec.key,
            data_type=spec.data_type.folder,
            scope=spec.scope.value,
            scope_id=spec.scope_id,
            room_id=spec.room_id,
            params=spec.params(end_time=self.manifest.snapshot_end_time),
        )
        self.manifest.streams.append(entry)
        self.monitor.of(spec.data_type.folder).streams += 1
        return entry

    async def run_stream(
        self,
        spec: StreamSpec,
        *,
        write: bool = True,
        on_chunk: Callable[[Chunk], None] | None = None,
    ) -> HyperStudyBulkError | None:
        """Fetch one stream into its files (with write=False only into `on_chunk`).

        Returns the error that ended the stream, or None when it is complete. A 401 and
        cancellation are raised instead: they end the run, not just the stream.
        """
        entry = self.entry_for(spec) if write else None
        figures = self.monitor.of(spec.data_type.folder)
        sink = (
            StreamSink(self.folder, spec.stem, part_max_bytes=self.settings.part_max_mb << 20)
            if write
            else None
        )
        progress = StreamProgress()
        if entry is not None:
            entry.started_at = iso_utc(datetime.now(UTC))

        def accept(chunk: Chunk) -> None:
            if sink is not None:
                sink.write(chunk.ndjson, chunk.records)
                figures.records += chunk.records
                figures.bytes += len(chunk.ndjson)
                if progress.pages == 1:
                    figures.expected += chunk.total
                self.monitor.on_page(spec.data_type.folder, chunk.records)
            if on_chunk is not None:
                on_chunk(chunk)

        failure: HyperStudyBulkError | None = None
        try:
            await fetch_stream(
                self.api,
                spec,
                spec.params(end_time=self.manifest.snapshot_end_time),
                page_size=self.settings.page_size,
                lookahead=self.settings.concurrency,
                on_chunk=accept,
                progress=progress,
            )
            if progress.records != progress.total:
                failure = IncompleteStream(
                    f"server total is {progress.total} but {progress.records} records arrived"
                )
            elif entry is not None and sink is not None:
                entry.files = [FileEntry(**vars(f)) for f in sink.finish()]
                entry.status = "complete"
        except HyperStudyBulkError as error:
            if isinstance(error, AuthError) and error.status == 401:
                failure = error
                raise
            failure = error
        except BaseException:
            failure = IncompleteStream("interrupted")
            raise
        finally:
            if failure is not None and sink is not None:
                sink.abandon()
            figures.requests += progress.requests
            if entry is not None:
                self._record(entry, progress, sink, failure)
        return failure

    def _record(
        self,
        entry: StreamEntry,
        progress: StreamProgress,
        sink: StreamSink | None,
        failure: HyperStudyBulkError | None,
    ) -> None:
        figures = self.monitor.of(entry.data_type)
        if failure is not None:
            entry.status = "incomplete"
            entry.error = str(failure)
        entry.server_total = progress.total
        entry.records = progress.records
        entry.pages = progress.pages
        entry.requests = progress.requests
        entry.bytes = sum(f.bytes for f in entry.files)
        entry.warnings = progress.warnings
        entry.open_part = sink.open_part if sink else None
        entry.finished_at = iso_utc(datetime.now(UTC))
        figures.streams_done += 1
        figures.incomplete += entry.status != "complete"
        self.save(force=False)

    def save(self, *, force: bool) -> None:
        """Save the manifest at most once a second while running, and always when forced.
        Before the first data file exists there is nothing to describe: a run refused at its
        first request leaves no folder behind."""
        now = time.monotonic()
        if not self.folder.exists():
            return
        if force or now - self.saved_at >= 1.0:
            self.manifest.updated_at = iso_utc(datetime.now(UTC))
            self.manifest.complete = bool(self.manifest.streams) and not (
                self.manifest.incomplete_streams
            )
            self.manifest.requests = {
                "sent": self.api.stats.requests,
                "by_status": {str(k): v for k, v in sorted(self.api.stats.by_status.items())},
                "retries": dict(self.api.stats.retries),
                "rate_limited": self.api.budget.counters.rate_limited,
                "paused_seconds": round(self.api.budget.counters.paused_seconds, 3),
            }
            self.manifest.save(self.folder)
            self.saved_at = now


class IncompleteStream(HyperStudyBulkError):
    """The stream ended without every record the server's total promised."""


async def archive_experiment(
    api: ApiClient,
    settings: Settings,
    experiment_id: str,
    *,
    monitor: Monitor,
    now: datetime | None = None,
) -> Manifest:
    """Archive one experiment into `settings.out/<experiment>`; returns the saved manifest.

    Raises ExperimentNotFound (before anything is written), ConfigError (output folder or an
    impossible granularity) and AuthError for a 401; every other failure ends only its stream
    and is recorded in the manifest.
    """
    folder = prepare_folder(settings.out, experiment_id)
    started = iso_utc(now or datetime.now(UTC))
    manifest = Manifest(
        experiment_id=experiment_id,
        base_url=settings.base_url,
        snapshot_end_time=started,
        granularity=settings.granularity.value,
        page_size=settings.page_size,
        data_types=[dt.folder for dt in settings.data_types],
        created_at=started,
        updated_at=started,
    )
    monitor.experiment_id = experiment_id
    run = _Run(api, settings, folder, manifest, monitor)
    try:
        rooms, rooms_complete = await _discover_rooms(run)
        granularity = choose_granularity(
            settings.granularity,
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
        done = {entry.key for entry in manifest.streams}
        await _run_all(
            run,
            [
                spec
                for spec in plan_streams(experiment_id, settings.data_types, granularity, rooms)
                if spec.key not in done
            ],
        )
    except ExperimentNotFound:
        raise
    except BaseException:
        run.save(force=True)
        raise
    run.save(force=True)
    return manifest


async def _discover_rooms(run: _Run) -> tuple[list[Room], bool]:
    """List the rooms (archiving the listing when rooms are wanted). The second value says
    whether the list is complete: the API caps it, and the listing may have failed."""
    experiment_id = run.manifest.experiment_id
    spec = plan_streams(experiment_id, [ROOMS], Granularity.EXPERIMENT, [])[0]
    ids: list[str] = []
    total = 0

    def collect(chunk: Chunk) -> None:
        nonlocal total
        total = chunk.total
        ids.extend(str(i) for i in chunk.ids if i is not None)

    failure = await run.run_stream(spec, write=ROOMS in run.settings.data_types, on_chunk=collect)
    if isinstance(failure, ApiError) and failure.status == 404:
        raise ExperimentNotFound(
            f"experiment {experiment_id!r} was not found (HTTP 404): check the id"
        )
    complete = failure is None and total < ROOMS_LISTING_CAP and len(ids) == total
    return [Room(room_id) for room_id in dict.fromkeys(ids)], complete


async def _discover_participants(run: _Run, rooms: Sequence[Room]) -> list[Room]:
    """Each room's participants, from its participant listing (archived when wanted)."""
    found: dict[str, list[str]] = {room.id: [] for room in rooms}
    write = PARTICIPANTS in run.settings.data_types

    async def one(spec: StreamSpec) -> None:
        def collect(chunk: Chunk) -> None:
            found[spec.scope_id].extend(str(i) for i in chunk.ids if i is not None)

        failure = await run.run_stream(spec, write=write, on_chunk=collect)
        if failure is not None:
            raise ConfigError(
                f"cannot list the participants of room {spec.scope_id!r} ({failure}); "
                "use --granularity room or experiment"
            )

    specs = plan_streams(run.manifest.experiment_id, [PARTICIPANTS], Granularity.ROOM, rooms)
    await _run_all(run, specs, job=one)
    return [Room(room_id, tuple(ids)) for room_id, ids in found.items()]


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
