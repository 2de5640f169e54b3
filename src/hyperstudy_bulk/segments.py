"""One stream over one window of time (a segment), brought safely onto disk.

Each page is appended, fsynced and checkpointed before the next is accepted, so a segment
interrupted at any moment resumes from its checkpoint: the open part is cut back to the
checkpointed length (a torn last line goes with it) and only what was not on disk is asked for
again. Part numbers are claimed from the archive's one PartNumbers and saved in the checkpoint
before a file is opened, and a finished segment is published in one uninterruptible step (rename,
fsync of the folder, checkpoint saved as complete), so a cancellation or crash never leaves a
published file that nothing records. Records whose id repeats across a page boundary (offsets
shifted by rows inserted mid-crawl) or that the archive already holds are not written twice.
When the records and the server's total still disagree, the segment is fetched again from
scratch, a bounded number of times, before it is called incomplete; each run has that
allowance afresh. The first fetch of a window and every refetch of it take this same path,
whichever run finishes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from hyperstudy_bulk.client import ApiClient
from hyperstudy_bulk.config import Settings
from hyperstudy_bulk.errors import HyperStudyBulkError, StorageError, ends_run
from hyperstudy_bulk.manifest import Checkpoint, FileEntry, StreamEntry, load_checkpoint
from hyperstudy_bulk.pager import Chunk, StreamProgress, fetch_stream, stream_ids
from hyperstudy_bulk.pagesize import PageSizes
from hyperstudy_bulk.pagination import Kept, drop_repeats
from hyperstudy_bulk.part_files import PartNumbers
from hyperstudy_bulk.plan import StreamSpec
from hyperstudy_bulk.progress import Monitor
from hyperstudy_bulk.sinks import PART_SUFFIX, FileResult, ResumeMismatch, StreamSink, ndjson

T = TypeVar("T")
OnIds = Callable[[Iterable[Any]], None]

MAX_REFETCHES = 2
"""Times a run fetches again a segment whose records disagree with the server's total."""


class IncompleteStream(HyperStudyBulkError):
    """The stream ended without every record the server's total promised."""


@dataclass(frozen=True)
class Segment:
    """`spec` over the window [start_time, end_time) of snapshot number `window`."""

    spec: StreamSpec
    window: int
    start_time: str | None
    end_time: str
    keep: frozenset[str] | None = None
    """Ids of a listing's records to write (None: every one): a selection's rooms or
    participants."""

    @property
    def key(self) -> str:
        return f"{self.spec.key}#{self.window}"

    @property
    def params(self) -> dict[str, str]:
        return self.spec.params(start_time=self.start_time, end_time=self.end_time)


async def uninterrupted(work: Callable[[], T]) -> T:
    """Run blocking disk work in a thread; if cancelled meanwhile, let it finish first so no
    file is closed under it, then propagate the cancellation. OSError becomes StorageError."""
    future = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # seen: the cancellation is what goes on, not a stray traceback
        raise
    except OSError as error:
        raise StorageError.from_os_error(error) from None


def ids_in(paths: Iterable[Path], id_field: str | None, *, last: int | None = None) -> list[Any]:
    """The id of every record in NDJSON files (or of the last `last` records)."""
    if id_field is None:
        return []
    ids: list[Any] = []
    for path in paths:
        with path.open("rb") as stream:
            ids.extend(orjson.loads(line).get(id_field) for line in stream if line.strip())
        if last is not None:
            del ids[:-last]
    return ids


def _results(entries: Iterable[FileEntry]) -> list[FileResult]:
    return [FileResult(e.path, e.records, e.bytes, e.sha256) for e in entries]


def _entries(results: Iterable[FileResult]) -> list[FileEntry]:
    return [FileEntry(r.path, r.records, r.bytes, r.sha256) for r in results]


@dataclass
class SegmentRunner:
    """Brings segments onto disk for one archive; `before_first_write` runs once, before the
    first page is written (so the manifest with its snapshot is on disk before any data)."""

    api: ApiClient
    settings: Settings
    folder: Path
    monitor: Monitor
    page_sizes: PageSizes
    before_first_write: Callable[[], None]
    numbers: PartNumbers
    _wrote: bool = False
    _fetching: int = 0
    """Segments fetching pages right now: they share the `concurrency` requests in flight."""
    _unwritten: asyncio.Semaphore = field(init=False)
    """A slot per page fetched but not yet on disk, shared by every segment: as many as
    requests may ever be in flight, so a slow disk holds that many pages in memory in all,
    not that many per stream."""

    def __post_init__(self) -> None:
        self._unwritten = asyncio.Semaphore(max(1, self.api.concurrency.maximum))

    def _fair_share(self) -> int:
        """Pages one segment may have in flight: an equal share of the requests in flight the
        client allows now (adaptive with `--concurrency auto`), at least one.
        A crawl of many streams then has about one page per stream in flight (what a crash can
        cost), and the last big stream gets every connection to itself."""
        limit = self.api.concurrency.limit
        return max(1, -(-limit // max(1, self._fetching)))  # rounded up

    async def fill(
        self,
        segment: Segment,
        entry: StreamEntry,
        *,
        known_ids: Collection[Any] = (),
        on_ids: OnIds | None = None,
    ) -> HyperStudyBulkError | None:
        """Bring `segment` to complete on disk, recording what happened in `entry`.

        `known_ids` are ids the archive already holds from earlier windows (not written again).
        Returns the error that ended the segment, or None when it is complete; a 401 and
        cancellation are raised instead, after `entry` is updated.
        """
        checkpoint = self.checkpoint(segment)
        failure: HyperStudyBulkError | None = None
        try:
            failure = await self._fill(segment, entry, checkpoint, known_ids, on_ids)
        except HyperStudyBulkError as error:
            failure = error
            if ends_run(error):
                raise
        except OSError as error:
            failure = StorageError.from_os_error(error)
            raise failure from None
        except BaseException:
            failure = IncompleteStream("interrupted")
            if entry.status != "complete":  # say how far it got: what the checkpoint holds
                summarise_progress(entry, self.checkpoint(segment))
            raise
        finally:
            if failure is not None and entry.status != "complete":
                entry.status, entry.error = "incomplete", str(failure)
        return failure

    def checkpoint(self, segment: Segment) -> Checkpoint:
        """The segment's checkpoint if it belongs to the same snapshot, else a fresh one."""
        saved = load_checkpoint(self.folder, segment.key)
        if saved is not None and saved.end_time == segment.end_time:
            return saved
        return self._fresh(segment)

    def _fresh(self, segment: Segment, *, refetches: int = 0, claimed: int = 0) -> Checkpoint:
        return Checkpoint(
            segment.key, end_time=segment.end_time, refetches=refetches, claimed=claimed
        )

    def _claim(self, segment: Segment) -> int:
        """A part number for `segment`, saved in its checkpoint before the caller opens the
        file (runs on the segment's writer thread, the only one saving its checkpoint)."""
        number = self.numbers.claim(segment.spec.key)
        saved = load_checkpoint(self.folder, segment.key)
        if saved is None or saved.end_time != segment.end_time:
            saved = self._fresh(segment)
        saved.claimed = max(saved.claimed, number)
        saved.save(self.folder)
        return number

    async def _fill(
        self,
        segment: Segment,
        entry: StreamEntry,
        checkpoint: Checkpoint,
        known_ids: Collection[Any],
        on_ids: OnIds | None,
    ) -> HyperStudyBulkError | None:
        refetched = 0
        while True:
            sink, checkpoint = self._open_sink(segment, checkpoint)
            try:
                if on_ids is not None:
                    on_ids(self._ids_on_disk(segment, checkpoint))
                if not checkpoint.done:
                    await self._fetch(segment, checkpoint, sink, known_ids, on_ids)
                expected = (
                    (checkpoint.total or 0)
                    - checkpoint.server_duplicates
                    - checkpoint.overlap
                    - checkpoint.excluded
                )
                if checkpoint.records == expected:
                    await uninterrupted(functools.partial(self._publish, sink, checkpoint))
                    return None
            finally:
                sink.close()
                summarise(entry, checkpoint)
            if refetched >= MAX_REFETCHES:
                return IncompleteStream(
                    f"server total is {checkpoint.total} but {checkpoint.records} distinct "
                    f"records arrived, after {refetched} refetches"
                )
            refetched += 1
            abandoned = checkpoint
            checkpoint = self._fresh(
                segment,
                refetches=abandoned.refetches + 1,
                claimed=max(abandoned.claimed, sink.claimed),
            )
            await uninterrupted(functools.partial(checkpoint.save, self.folder))
            summarise(entry, checkpoint)
            await uninterrupted(sink.discard)  # nothing records its files any more

    def _publish(self, sink: StreamSink, checkpoint: Checkpoint) -> None:
        """Rename the last part into place and save the checkpoint as complete, in one step
        no cancellation splits; `checkpoint` says complete only once that is on disk."""
        published = dataclasses.replace(
            checkpoint, files=_entries(sink.finish()), part=None, complete=True
        )
        published.claimed = max(published.claimed, sink.claimed)
        published.save(self.folder)
        checkpoint.files, checkpoint.part, checkpoint.claimed = (
            published.files,
            None,
            published.claimed,
        )
        checkpoint.complete = True

    def _open_sink(self, segment: Segment, checkpoint: Checkpoint) -> tuple[StreamSink, Checkpoint]:
        """The segment's sink, resumed from the checkpoint when its files still match it;
        otherwise (or with nothing to resume) emptied of any earlier files for a fresh start."""

        def sink(**resume: Any) -> StreamSink:
            return StreamSink(
                self.folder,
                segment.spec.stem,
                part_max_bytes=self.settings.part_max_mb << 20,
                claim=functools.partial(self._claim, segment),
                empty_file=segment.window == 0,
                **resume,
            )

        if checkpoint.pages:
            try:
                part = _results([checkpoint.part])[0] if checkpoint.part else None
                return sink(files=_results(checkpoint.files), part=part), checkpoint
            except ResumeMismatch:
                checkpoint = self._fresh(
                    segment, refetches=checkpoint.refetches, claimed=checkpoint.claimed
                )
        return sink(), checkpoint

    def _ids_on_disk(self, segment: Segment, checkpoint: Checkpoint) -> list[Any]:
        paths = [self.folder / f.path for f in checkpoint.files]
        if checkpoint.part is not None:
            paths.append(self.folder / (checkpoint.part.path + PART_SUFFIX))
        return ids_in(paths, segment.spec.data_type.id_field)

    async def _fetch(
        self,
        segment: Segment,
        checkpoint: Checkpoint,
        sink: StreamSink,
        known_ids: Collection[Any],
        on_ids: OnIds | None,
    ) -> None:
        name = segment.spec.data_type.folder
        figures = self.monitor.of(name)
        progress = StreamProgress(
            requests=checkpoint.requests,
            warnings=checkpoint.warnings,
            in_transit=figures.add_in_transit,
        )
        figures.records += checkpoint.records
        counted_total = False
        counted_requests = progress.requests

        def count_requests() -> None:
            """Bring the live request figure up to date (the pager counts as it sends)."""
            nonlocal counted_requests
            figures.requests += progress.requests - counted_requests
            counted_requests = progress.requests

        writer = _GroupWriter(sink, self.folder, slots=self._unwritten)
        previous: set[Any] = set(checkpoint.recent_ids)

        async def accept(chunk: Chunk) -> None:
            nonlocal counted_total, previous
            kept = drop_repeats(chunk.ids, previous, known_ids) if chunk.ids else None
            previous = kept.page_ids if kept else set()
            records, ids = chunk.records, chunk.ids
            if kept is not None and len(kept.indices) < len(records):
                records = [records[i] for i in kept.indices]
                ids = [ids[i] for i in kept.indices]
            if segment.keep is not None:
                inside = [i for i, identifier in enumerate(ids) if identifier in segment.keep]
                checkpoint.excluded += len(ids) - len(inside)
                records, ids = [records[i] for i in inside], [ids[i] for i in inside]
            data = ndjson(records)
            _advance(checkpoint, chunk, kept, len(records), progress)
            if not self._wrote:
                self.before_first_write()
                self._wrote = True
            await writer.put(data, len(records), checkpoint)
            # Records dropped as repeats are accounted for too: the server's total counts them.
            figures.records += len(chunk.records)
            figures.bytes += len(data)
            count_requests()
            if not counted_total:
                figures.expected += chunk.total
                counted_total = True
            if on_ids is not None:
                on_ids(ids)
            self.monitor.on_page(name, len(records))

        self._fetching += 1
        try:
            await fetch_stream(
                self.api,
                segment.spec,
                segment.params,
                start=checkpoint.next_offset,
                page_sizes=self.page_sizes,
                lookahead=self._fair_share,
                on_chunk=accept,
                progress=progress,
            )
            await writer.close()
        finally:
            self._fetching -= 1
            await writer.stop()
            count_requests()
            checkpoint.requests = progress.requests
            checkpoint.warnings = progress.warnings
            checkpoint.files = _entries(sink.files)
            part = sink.open_part
            checkpoint.part = _entries([part])[0] if part else None

    async def ids_only(self, segment: Segment, on_ids: OnIds) -> HyperStudyBulkError | None:
        """Page through a segment only to learn its ids (discovery of a type not archived)."""

        try:
            ids, _ = await stream_ids(
                self.api,
                segment.spec,
                segment.params,
                page_sizes=self.page_sizes,
                lookahead=self.api.concurrency.typical,
            )
        except HyperStudyBulkError as error:
            if ends_run(error):
                raise
            return error
        on_ids(ids)
        return None


class _GroupWriter:
    """Appends a segment's pages in the background, fsyncing before each checkpoint. Pages that
    arrive while a write is under way go out together with one fsync and one checkpoint (group
    commit), so durability per page does not cost an fsync per page. Each page waiting or being
    written holds one of `slots` (shared by all the archive's writers) until it is on disk or
    dropped; `put` waits for a slot, which slows the fetching down to the disk's pace."""

    def __init__(self, sink: StreamSink, folder: Path, *, slots: asyncio.Semaphore) -> None:
        self._sink = sink
        self._folder = folder
        self._slots = slots
        self._queue: asyncio.Queue[tuple[bytes, int, Checkpoint] | None] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._run())

    async def put(self, data: bytes, records: int, state: Checkpoint) -> None:
        """Queue one page and the checkpoint as it stands after it (copied now)."""
        if self._task.done():
            self._task.result()
            raise RuntimeError("the writer has stopped")
        snapshot = dataclasses.replace(state, warnings=list(state.warnings))
        await self._slots.acquire()
        self._queue.put_nowait((data, records, snapshot))

    async def close(self) -> None:
        """Write what is queued and stop; raises what the writing raised."""
        self._queue.put_nowait(None)
        await self._task

    async def stop(self) -> None:
        """Stop without waiting for queued pages (they were never checkpointed); their slots
        go back."""
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            if self._queue.get_nowait() is not None:
                self._slots.release()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while batch[-1] is not None and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            pages = [item for item in batch if item is not None]
            try:
                if pages:
                    await uninterrupted(functools.partial(self._persist, pages))
            finally:
                for _ in pages:
                    self._slots.release()
            if batch[-1] is None:
                return

    def _persist(self, pages: list[tuple[bytes, int, Checkpoint]]) -> None:
        for data, records, _ in pages:
            self._sink.write(data, records)
        self._sink.sync()
        state = pages[-1][2]
        state.files = _entries(self._sink.files)
        part = self._sink.open_part
        state.part = _entries([part])[0] if part else None
        state.claimed = max(state.claimed, self._sink.claimed)
        state.save(self._folder)


def summarise(entry: StreamEntry, checkpoint: Checkpoint) -> None:
    """Copy a checkpoint's figures into the manifest's entry for the segment; a complete one
    completes the entry (its superseded files are left for part_files.sweep)."""
    entry.files = checkpoint.files
    summarise_progress(entry, checkpoint)
    if checkpoint.complete:
        entry.status, entry.error, entry.superseded = "complete", None, []


def summarise_progress(entry: StreamEntry, checkpoint: Checkpoint) -> None:
    """Copy a checkpoint's figures, but not its files, into the entry: an interrupted stream
    then says how far it got (records and bytes on disk, open part included)."""
    entry.server_total = checkpoint.total
    entry.records = checkpoint.records
    entry.pages = checkpoint.pages
    entry.requests = checkpoint.requests
    entry.duplicates_dropped = checkpoint.duplicates
    entry.server_duplicates = checkpoint.server_duplicates
    entry.overlap = checkpoint.overlap
    entry.excluded = checkpoint.excluded
    entry.refetches = checkpoint.refetches
    entry.warnings = checkpoint.warnings
    part = checkpoint.part
    entry.bytes = sum(f.bytes for f in checkpoint.files) + (part.bytes if part else 0)
    entry.open_part = part.path + PART_SUFFIX if part else None


def _advance(
    checkpoint: Checkpoint, chunk: Chunk, kept: Kept | None, written: int, progress: StreamProgress
) -> None:
    """Move the checkpoint past `chunk` (saved once the data is durable)."""
    checkpoint.next_offset = chunk.end
    checkpoint.done = not chunk.has_more
    checkpoint.total = chunk.total
    checkpoint.pages += 1
    checkpoint.records += written
    checkpoint.requests = progress.requests
    checkpoint.warnings = progress.warnings
    if kept is not None:
        checkpoint.duplicates += kept.repeated
        checkpoint.overlap += kept.archived
        checkpoint.server_duplicates += kept.server_repeated
    checkpoint.recent_ids = chunk.ids
