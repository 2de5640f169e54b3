"""One experiment, start to finish: discover -> plan -> fetch under one budget -> write ->
checkpoint -> manifest. The CLI and the library's `download()` are thin layers over
`archive_experiment`.

An archive covers time up to its snapshot: every time-ordered stream is fetched with
endTime = the moment the first crawl began, so records arriving meanwhile do not shift its
pages. Running the same download again resumes an unfinished archive from its checkpoints, or,
for a complete one, only asks for each data type's total to learn that nothing changed.
`update=True` adds a window: from the last snapshot to now, into new part files, leaving what
is there untouched. A window whose total moved is fetched again by the same path as a first
fetch: its files become `superseded` (recorded in the manifest before anything is fetched) and
are removed, by the `sweep` at the end of whichever run completes it, only once the new files
are recorded.

Streams run on a fixed pool of workers (bounded fan-out, so open files and buffered pages stay
bounded however many rooms there are). A stream that fails ends alone and is recorded as
incomplete; a 401 ends the run. Whatever happens, including cancellation, the manifest is saved
with the true state of every stream before this returns or raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from hyperstudy_bulk.client import ApiClient
from hyperstudy_bulk.config import Granularity, Settings
from hyperstudy_bulk.datatypes import PARTICIPANTS, ROOMS, DataType, Scope, data_type_named
from hyperstudy_bulk.errors import ApiError, ConfigError, HyperStudyBulkError, StorageError
from hyperstudy_bulk.lock import archive_lock, exclusive
from hyperstudy_bulk.manifest import (
    MANIFEST_NAME,
    Manifest,
    MediaEntry,
    StreamEntry,
    drop_checkpoint,
    load_manifest,
)
from hyperstudy_bulk.media import (
    MediaFetcher,
    MediaJob,
    media_entries,
    plan_media,
    recording_rows,
)
from hyperstudy_bulk.pagesize import PageSizes
from hyperstudy_bulk.part_files import PartNumbers, sweep
from hyperstudy_bulk.plan import Room, StreamSpec, choose_granularity, plan_streams
from hyperstudy_bulk.progress import Monitor
from hyperstudy_bulk.segments import OnIds, Segment, SegmentRunner, ids_in, summarise
from hyperstudy_bulk.selection import Selection
from hyperstudy_bulk.sinks import legacy_name, safe_name
from hyperstudy_bulk.timespec import iso_utc

T = TypeVar("T")
ROOMS_LISTING_CAP = 5000
"""The API lists at most this many rooms (contract §3.1): a longer list may be cut short."""


class ExperimentNotFound(HyperStudyBulkError):
    """The API does not know the experiment id (404 on its room listing)."""


def experiment_folder(out: Path, experiment_id: str) -> Path:
    """The experiment's folder under `out`: named by `safe_name`, or the folder an earlier
    version named (percent-encoding every non-ASCII letter) when only that one exists."""
    folder = out / safe_name(experiment_id)
    legacy = out / legacy_name(experiment_id)
    return legacy if not folder.exists() and legacy.is_dir() else folder


def prepare_folder(folder: Path) -> None:
    """Check, before any request is made, that the archive's `folder` can be written: its
    parent (the --out) is created if missing; the folder itself is made by the first file
    written."""
    out = folder.parent
    blocking = next((path for path in (folder, *folder.parents) if path.is_file()), None)
    if blocking == folder:
        raise ConfigError(
            f"{folder} is a file where the archive's folder belongs: move it aside or choose "
            "another --out"
        )
    if blocking == out:
        raise ConfigError(f"--out {out} is a file, not a folder: choose a folder path")
    if blocking is not None:
        raise ConfigError(
            f"--out {out} cannot be created: {blocking} is a file, not a folder; choose a "
            "folder path"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create --out {out}: {error.strerror}") from None
    target = folder if folder.exists() else out
    if not os.access(target, os.W_OK | os.X_OK):
        raise ConfigError(f"{target} is not writable: fix its permissions or choose another --out")


@contextlib.contextmanager
def _nothing_left_behind(folder: Path) -> Iterator[None]:
    """Folders created on the way to `folder` are removed again if the run wrote nothing in
    them: a mistyped experiment id or a refused key leaves no empty --out behind."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        yield
    finally:
        for path in missing:  # the deepest first; a folder with anything in it stays
            with contextlib.suppress(OSError):
                path.rmdir()


@dataclass(frozen=True)
class Assignment:
    """A shard's part of an experiment (see shards.py): these streams, at the snapshot and
    granularity the shards agreed on, described in a manifest part of its own."""

    streams: Sequence[StreamSpec]
    snapshot: str
    granularity: Granularity
    manifest_name: str


@dataclass
class _Run:
    api: ApiClient
    settings: Settings
    folder: Path
    manifest: Manifest
    monitor: Monitor
    manifest_name: str = MANIFEST_NAME
    saved_at: float = 0.0
    records_due: bool = True
    """The streams' fetching has not finished (some may not have started): not complete yet,
    whatever the entries saved so far say (a run stopped between two streams)."""
    media_due: bool = False
    """Media files are wanted and their fetching has not finished: not complete yet."""
    entries: dict[tuple[str, int], StreamEntry] = field(default_factory=dict)
    page_sizes: PageSizes = field(init=False)
    segments: SegmentRunner = field(init=False)
    selection: Selection = field(init=False)

    def __post_init__(self) -> None:
        self.selection = Selection.from_manifest(self.manifest.selection)
        self.entries = {(entry.key, entry.window): entry for entry in self.manifest.streams}
        self.page_sizes = PageSizes(
            fixed=self.settings.fixed_page_size,
            maximum=self.settings.max_page_size,
            learned=self.manifest.page_sizes,
        )
        self.segments = SegmentRunner(
            self.api,
            self.settings,
            self.folder,
            self.monitor,
            self.page_sizes,
            before_first_write=lambda: self.save(force=True, create=True),
            numbers=PartNumbers(self.folder, self.manifest),
        )

    @property
    def window(self) -> int:
        return len(self.manifest.snapshots) - 1

    def segment(self, spec: StreamSpec, window: int) -> Segment:
        """The stream over snapshot window `window`, cut to the archive's selection. A stream
        the manifest knows keeps its files' names, even ones an earlier version gave."""
        windows = [self.entries.get((spec.key, w)) for w in range(window + 1)]
        archived = next((e.stem for e in windows if e is not None and e.stem), spec.stem)
        spec = replace(spec, stem=archived)
        start, end = self.selection.window(
            self.manifest.snapshots[window - 1] if window else None, self.manifest.snapshots[window]
        )
        return Segment(
            spec,
            window,
            start_time=start,
            end_time=end,
            keep=self.selection.keep(spec),
        )

    def entry_for(self, segment: Segment) -> StreamEntry:
        spec = segment.spec
        entry = self.entries.get((spec.key, segment.window))
        if entry is None:
            entry = StreamEntry(
                key=spec.key,
                data_type=spec.data_type.folder,
                scope=spec.scope.value,
                scope_id=spec.scope_id,
                room_id=spec.room_id,
                params=segment.params,
                window=segment.window,
                stem=spec.stem,
            )
            self.manifest.streams.append(entry)
            self.entries[(spec.key, segment.window)] = entry
        return entry

    def earlier_files(self, spec: StreamSpec, window: int) -> list[Path]:
        """The stream's files from the windows before `window`, oldest first."""
        earlier = [self.entries.get((spec.key, w)) for w in range(window)]
        return [self.folder / f.path for e in earlier if e is not None for f in e.held_files]

    def known_ids(self, segment: Segment) -> Collection[Any]:
        """Ids the archive holds from the stream's earlier windows: all of a listing's, and
        the last page's worth of a time-ordered stream (where an inclusive edge repeats)."""
        spec = segment.spec
        paths = self.earlier_files(spec, segment.window)
        if spec.data_type.time_filtered:
            last = self.page_sizes.largest()
            return set(ids_in(paths[-1:], spec.data_type.id_field, last=last))
        return set(ids_in(paths, spec.data_type.id_field))

    async def run_stream(
        self,
        spec: StreamSpec,
        *,
        window: int | None = None,
        write: bool = True,
        on_ids: OnIds | None = None,
    ) -> HyperStudyBulkError | None:
        """Bring one stream's window (the current one by default) to complete on disk, or with
        write=False only report its ids. Returns the error that ended it, or None."""
        segment = self.segment(spec, self.window if window is None else window)
        if not write:
            return await self.segments.ids_only(segment, on_ids or (lambda ids: None))
        entry = self.entry_for(segment)
        figures = self.monitor.of(spec.data_type.folder)
        figures.endpoint = spec.endpoint
        checkpoint = self.segments.checkpoint(segment)
        if checkpoint.complete and entry.status != "complete":
            summarise(entry, checkpoint)
        if entry.status == "complete":
            if on_ids is not None:
                on_ids(ids_in([self.folder / f.path for f in entry.files], spec.data_type.id_field))
            self.count_held(entry)
            return None
        figures.streams += 1
        entry.status, entry.error = "pending", None
        entry.started_at = iso_utc(datetime.now(UTC))
        try:
            return await self.segments.fill(
                segment, entry, known_ids=self.known_ids(segment), on_ids=on_ids
            )
        finally:
            entry.finished_at = iso_utc(datetime.now(UTC))
            figures.streams_done += 1
            self.save(force=False)

    def count_held(self, entry: StreamEntry) -> None:
        """Show a stream window the archive already holds whole as done."""
        figures = self.monitor.of(entry.data_type)
        figures.streams += 1
        figures.streams_done += 1
        figures.records += entry.records
        figures.expected += entry.records

    def save(self, *, force: bool, create: bool = False) -> None:
        """Save the manifest at most once a second while running, and always when forced.
        Until the first page is about to be written (`create`) there is nothing to describe:
        a run refused at its first request leaves no folder behind."""
        now = time.monotonic()
        if not (create or (self.folder / self.manifest_name).exists()):
            return
        if force or now - self.saved_at >= 1.0:
            self.manifest.updated_at = iso_utc(datetime.now(UTC))
            due = self.records_due or self.media_due
            self.manifest.complete = is_complete(self.manifest) and not due
            self.manifest.page_sizes = self.page_sizes.learned
            stats = self.api.stats
            self.manifest.requests = {
                "sent": stats.requests,
                "bytes_received": stats.bytes_received,
                "by_status": {str(k): v for k, v in sorted(stats.by_status.items())},
                "retries": dict(stats.retries),
                "rate_limited": self.api.budget.counters.rate_limited,
                "paused_seconds": round(self.api.budget.counters.paused_seconds, 3),
                "in_flight_limit": self.api.concurrency.limit,
            }
            try:
                self.manifest.save(self.folder, self.manifest_name)
            except OSError as error:
                raise StorageError.from_os_error(error) from None
            self.saved_at = now


def is_complete(manifest: Manifest) -> bool:
    """Every record and every file that exists is on disk (a recording without a file is
    not missing one)."""
    return bool(manifest.streams) and not (manifest.incomplete_streams or manifest.failed_media)


def _existing_manifest(folder: Path, name: str) -> Manifest | None:
    if not (folder / name).exists():
        return None
    try:
        return load_manifest(folder, name)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ConfigError(
            f"{folder / name} cannot be read ({error}); move the folder aside or "
            "choose another --out"
        ) from None


def _open_manifest(
    folder: Path,
    settings: Settings,
    experiment_id: str,
    moment: str,
    *,
    update: bool,
    name: str = MANIFEST_NAME,
    asked: Selection,
) -> tuple[Manifest, bool]:
    """The archive's manifest `name` (new, resumed, or with a new window for `update`), and
    whether it was already complete before this run. The selection `asked` must be the
    archive's (an update asking for none continues the archive's)."""
    existing = _existing_manifest(folder, name)
    if existing is None:
        if update:
            raise ConfigError(f"nothing to update: {folder} holds no archive; download it first")
        manifest = Manifest(
            experiment_id=experiment_id,
            base_url=settings.base_url,
            snapshot_end_time=moment,
            snapshots=[moment],
            granularity=settings.granularity.value,
            page_size=settings.page_size,
            data_types=[dt.folder for dt in settings.data_types],
            created_at=moment,
            updated_at=moment,
            selection=asked.to_manifest(),
        )
        return manifest, False
    Selection.from_manifest(existing.selection).check_same(asked, folder, update=update)
    requested = settings.granularity
    if requested is not Granularity.AUTO and existing.granularity not in ("auto", requested):
        raise ConfigError(
            f"{folder} was archived at granularity {existing.granularity}; continue it with "
            f"--granularity {existing.granularity} (or auto), or choose another --out"
        )
    if update:
        # Media files that failed do not block a new window: the run retries them anyway.
        if not existing.streams or existing.incomplete_streams:
            raise ConfigError(
                f"{folder} is not complete yet: run the download again (without --update) to "
                "finish it, then update it"
            )
        existing.snapshots.append(moment)
        existing.snapshot_end_time = moment
        existing.complete = False
    added = [dt.folder for dt in settings.data_types if dt.folder not in existing.data_types]
    existing.data_types += added
    # Data types asked for now but not archived before make a complete archive a crawl again
    # (its complete streams are skipped, the new ones fetched within the same snapshot).
    return existing, existing.complete and not added


async def archive_experiment(
    api: ApiClient,
    settings: Settings,
    experiment_id: str,
    *,
    monitor: Monitor,
    now: datetime | None = None,
    update: bool = False,
    folder: Path | None = None,
    assignment: Assignment | None = None,
) -> Manifest:
    """Archive one experiment into `folder` (by default `settings.out/<experiment>`), resume an
    unfinished archive there, confirm a complete one unchanged, or (`update`) add what is new
    since its last snapshot; with an `assignment`, fetch only a shard's streams. Returns the
    saved manifest.

    Raises BusyError while another run writes the same archive, ExperimentNotFound (before
    anything is written), ConfigError (output folder, an
    impossible granularity, one unlike the archive's, nothing to update), and what ends every
    stream alike: AuthError for a 401, StorageError (disk full), TlsError. Any other failure
    ends only its stream and is recorded in the manifest.
    """
    folder = folder or experiment_folder(settings.out, experiment_id)
    with _nothing_left_behind(folder):
        prepare_folder(folder)
        # Shards write one archive at once, each its own streams: each holds its own part's
        # lock (two runs of the same shard still exclude each other). Where the file system
        # has no locks, the run says so and goes on unlocked.
        writer = (
            exclusive(
                folder / f"{assignment.manifest_name}.lock",
                what=f"shard part of {folder}",
                unlocked=monitor.note,
            )
            if assignment is not None
            else archive_lock(folder, unlocked=monitor.note)
        )
        with writer:
            return await _archive_into(
                api, settings, experiment_id, folder, monitor, now, update, assignment
            )


async def _archive_into(
    api: ApiClient,
    settings: Settings,
    experiment_id: str,
    folder: Path,
    monitor: Monitor,
    now: datetime | None,
    update: bool,
    assignment: Assignment | None,
) -> Manifest:
    name = assignment.manifest_name if assignment else MANIFEST_NAME
    if settings.media_only and not (folder / name).exists():
        raise ConfigError(
            f"--media-only: {folder} holds no archive ({name}); download its records first"
        )
    now = now or datetime.now(UTC)
    moment = assignment.snapshot if assignment else iso_utc(now)
    asked = Selection.from_settings(settings, now)
    manifest, was_complete = _open_manifest(
        folder, settings, experiment_id, moment, update=update, name=name, asked=asked
    )
    monitor.experiment_id = experiment_id
    media = settings.media or settings.media_only
    run = _Run(api, settings, folder, manifest, monitor, manifest_name=name, media_due=media)
    monitor.page_size = run.page_sizes.expected
    try:
        if settings.media_only:
            pass  # the records are there: only the media files they name are due
        elif assignment is not None:
            manifest.granularity = assignment.granularity.value
            await _run_all(run, assignment.streams)
        else:
            await (_refetch_changed(run) if was_complete else _crawl(run))
        run.records_due = False
        if media:
            await _fetch_media(run)
            run.media_due = False
    except ExperimentNotFound:
        raise
    except BaseException:
        with contextlib.suppress(StorageError):  # the checkpoints already hold the truth
            run.save(force=True)
        raise
    run.save(force=True)
    for entry in manifest.streams:
        if entry.status == "complete":
            drop_checkpoint(folder, f"{entry.key}#{entry.window}")
    sweep(folder, manifest)
    return manifest


async def _crawl(run: _Run) -> None:
    """Discover, plan and fetch every stream's current window."""
    settings, manifest = run.settings, run.manifest
    requested = settings.granularity
    if manifest.granularity != Granularity.AUTO.value:
        requested = Granularity(manifest.granularity)
    if run.selection.narrows_rooms:
        rooms, granularity, discovered = await _discover_selected(run, requested)
    else:
        rooms, granularity, discovered = await _discover_all(run, requested)
    manifest.granularity = granularity.value
    specs = plan_streams(manifest.experiment_id, settings.data_types, granularity, rooms)
    planned = [spec for spec in specs if spec.data_type not in discovered]
    for spec in planned:
        run.monitor.of(spec.data_type.folder).planned += 1
    await _run_all(run, planned)
    await _refetch(
        run, [e for e in manifest.streams if e.window < run.window and e.status != "complete"]
    )


async def _discover_all(
    run: _Run, requested: Granularity
) -> tuple[list[Room], Granularity, set[DataType]]:
    """Every room (and participant, at participant granularity) of the experiment, the
    granularity to fetch at, and the listings discovery archived on the way."""
    settings, manifest = run.settings, run.manifest
    rooms, rooms_complete = await _discover_rooms(run)
    granularity = choose_granularity(
        requested,
        settings.data_types,
        rooms,
        totals={},
        page_size=run.page_sizes.expected(ROOMS.folder),
        rooms_complete=rooms_complete,
    )
    if granularity is not Granularity.EXPERIMENT and not rooms_complete:
        raise ConfigError(
            f"--granularity {granularity} needs the full room list of "
            f"{manifest.experiment_id!r}, which the API did not give; use --granularity experiment"
        )
    if granularity is Granularity.PARTICIPANT:
        return await _discover_participants(run, rooms), granularity, {ROOMS, PARTICIPANTS}
    return rooms, granularity, {ROOMS}


async def _discover_selected(
    run: _Run, requested: Granularity
) -> tuple[list[Room], Granularity, set[DataType]]:
    """The selection's rooms (and participants), checked against the listings before any
    data is fetched (an unknown id raises ConfigError naming it), once: an archive's later
    windows were checked when it was created. The listings are only read here; they are
    archived later like any stream, keeping only the selection."""
    selection, experiment = run.selection, run.manifest.experiment_id
    granularity = selection.granularity(requested)
    rooms = selection.rooms_to_fetch()
    if run.window == 0:
        rooms_listing = plan_streams(experiment, [ROOMS], Granularity.EXPERIMENT, [])[0]
        selection.unknown_rooms(experiment, await _listed_ids(run, rooms_listing))
        if selection.participants:
            spec = plan_streams(experiment, [PARTICIPANTS], Granularity.ROOM, rooms)[0]
            selection.unknown_participants(await _listed_ids(run, spec))
    if selection.participants:
        return rooms, granularity, set()
    if granularity is Granularity.PARTICIPANT:
        return await _discover_participants(run, rooms), granularity, {PARTICIPANTS}
    return rooms, granularity, set()


async def _listed_ids(run: _Run, spec: StreamSpec) -> list[str]:
    """Every id a listing holds now, read without writing (404 on the room listing: the
    experiment does not exist)."""
    ids: list[str] = []
    failure = await run.run_stream(
        spec, write=False, on_ids=lambda found: ids.extend(str(i) for i in found if i is not None)
    )
    if isinstance(failure, ApiError) and failure.status == 404 and spec.data_type is ROOMS:
        raise ExperimentNotFound(
            f"experiment {run.manifest.experiment_id!r} was not found (HTTP 404): check the id"
        )
    if failure is not None:
        raise failure
    return ids


def time_ordered_holdings(manifest: Manifest) -> list[tuple[DataType, list[StreamEntry], int]]:
    """Each time-ordered data type the archive holds: its stream windows, and the records the
    server counted in them when they were archived."""
    held = []
    for name in manifest.data_types:
        data_type = data_type_named(name)
        entries = [e for e in manifest.streams if e.data_type == name]
        if data_type.time_filtered and entries:
            held.append((data_type, entries, sum(e.server_total or 0 for e in entries)))
    return held


async def _refetch_changed(run: _Run) -> None:
    """For a complete archive: ask each time-ordered data type's total over the archived span
    (one request each); only where it moved, check that type's segments one by one, and fetch
    again the segments whose totals changed (records that arrived late)."""
    manifest = run.manifest
    before = run.api.stats.requests
    experiment, end = manifest.experiment_id, manifest.snapshot_end_time
    changed: list[StreamEntry] = []
    for data_type, entries, archived in time_ordered_holdings(manifest):
        probes = run.selection.probe_specs(experiment, data_type)
        held = [await _total(run, s, run.selection.probe_params(s, end)) for s in probes]
        if sum(held) == archived:
            continue
        for entry in entries:
            if await _total(run, spec_of(entry), entry.params) != entry.server_total:
                changed.append(entry)
    for entry in manifest.streams:
        if entry not in changed:
            run.count_held(entry)
    run.monitor.note(
        f"archive was complete; {run.api.stats.requests - before} requests checked it: "
        + (f"{len(changed)} stream window(s) changed" if changed else "nothing changed")
    )
    if not changed:
        return
    for entry in changed:
        drop_checkpoint(run.folder, f"{entry.key}#{entry.window}")
        entry.superseded += entry.files
        entry.files, entry.status = [], "pending"
    run.save(force=True)  # the old files stay recorded (superseded) until the new replace them
    await _refetch(run, changed)


async def _refetch(run: _Run, entries: Sequence[StreamEntry]) -> None:
    """Fetch these stream windows (not the current one) again, the way a first fetch goes."""

    async def one(entry: StreamEntry) -> None:
        await run.run_stream(spec_of(entry), window=entry.window)

    await _pool(entries, run.api.concurrency.typical, one)


def spec_of(entry: StreamEntry) -> StreamSpec:
    """The stream an entry of the manifest describes."""
    return StreamSpec(
        data_type_named(entry.data_type),
        Scope(entry.scope),
        entry.scope_id,
        entry.stem,
        room_id=entry.room_id,
    )


async def _total(run: _Run, spec: StreamSpec, params: dict[str, str]) -> int:
    """The stream's total over `params`' window: one request, counted for its data type."""
    run.monitor.of(spec.data_type.folder).requests += 1
    return await total_of(run.api, spec, params)


async def total_of(api: ApiClient, spec: StreamSpec, params: dict[str, str]) -> int:
    """The server's count of a stream's records matching `params` (one 1-record request)."""
    page = await api.get_page(spec.endpoint, spec.segments, params, offset=0, limit=1)
    return page.total


async def _discover_rooms(run: _Run) -> tuple[list[Room], bool]:
    """List the rooms (archiving the listing when rooms are wanted), adding those an earlier
    window archived. The second value says whether the list is complete: the API caps it, and
    the listing may have failed."""
    manifest = run.manifest
    spec = plan_streams(manifest.experiment_id, [ROOMS], Granularity.EXPERIMENT, [])[0]
    ids: list[str] = []

    def collect(found: Iterable[Any]) -> None:
        ids.extend(str(i) for i in found if i is not None)

    collect(ids_in(run.earlier_files(spec, run.window), ROOMS.id_field))
    listed_before = len(ids)
    failure = await run.run_stream(spec, write=ROOMS in run.settings.data_types, on_ids=collect)
    if isinstance(failure, ApiError) and failure.status == 404:
        raise ExperimentNotFound(
            f"experiment {manifest.experiment_id!r} was not found (HTTP 404): check the id"
        )
    unique = list(dict.fromkeys(ids))
    complete = failure is None and len(ids) - listed_before < ROOMS_LISTING_CAP
    return [Room(room_id) for room_id in unique], complete


async def _discover_participants(run: _Run, rooms: Sequence[Room]) -> list[Room]:
    """Each room's participants, from its participant listing (archived when wanted)."""
    found: dict[str, list[str]] = {room.id: [] for room in rooms}
    write = PARTICIPANTS in run.settings.data_types

    async def one(spec: StreamSpec) -> None:
        def collect(ids: Iterable[Any]) -> None:
            found[spec.scope_id].extend(str(i) for i in ids if i is not None)

        collect(ids_in(run.earlier_files(spec, run.window), PARTICIPANTS.id_field))
        failure = await run.run_stream(spec, write=write, on_ids=collect)
        if failure is not None:
            raise ConfigError(
                f"cannot list the participants of room {spec.scope_id!r} ({failure}); "
                "use --granularity room or experiment"
            )

    specs = plan_streams(run.manifest.experiment_id, [PARTICIPANTS], Granularity.ROOM, rooms)
    await _run_all(run, specs, job=one)
    return [Room(room_id, tuple(dict.fromkeys(ids))) for room_id, ids in found.items()]


async def _fetch_media(run: _Run) -> None:
    """The media file of every recording row the archive holds, `media_concurrency` at a
    time, each recorded in the manifest (files already whole are skipped, parts resumed)."""
    rows = await asyncio.to_thread(lambda: list(recording_rows(run.folder, run.manifest)))
    jobs = media_entries(run.manifest, plan_media(rows))
    fetcher = MediaFetcher(
        run.api, run.settings, run.folder, run.monitor.media, log=run.monitor.note
    )
    fetcher.expect([job for job, _ in jobs])

    async def one(pair: tuple[MediaJob, MediaEntry]) -> None:
        await fetcher.fetch(*pair)
        run.save(force=False)

    async with fetcher:
        await _pool(jobs, run.settings.media_concurrency, one)


async def _run_all(
    run: _Run,
    specs: Sequence[StreamSpec],
    job: Callable[[StreamSpec], Awaitable[object]] | None = None,
) -> None:
    """Run `specs` in the current window on as many workers as requests may be in flight
    (where an adaptive limit starts: as it grows, pages look further ahead instead)."""
    await _pool(specs, run.api.concurrency.typical, job or run.run_stream)


async def _pool(items: Sequence[T], workers: int, work: Callable[[T], Awaitable[object]]) -> None:
    """Run `work` over `items` on at most `workers` tasks (a fixed pool, so what is open and
    buffered stays bounded however many items there are); the first exception a job raises
    cancels the others and is raised as itself."""
    queue = deque(items)

    async def drain() -> None:
        while queue:
            await work(queue.popleft())

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(workers, len(queue))):
                group.create_task(drain())
    except BaseExceptionGroup as failures:
        raise _first_leaf(failures) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


__all__ = [
    "Assignment",
    "ExperimentNotFound",
    "archive_experiment",
    "experiment_folder",
    "prepare_folder",
]
