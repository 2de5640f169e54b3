"""Late records: ones the server now holds inside a span the archive already covers (a
participant's client uploading buffered samples minutes later, stamped before the snapshot).

Found by bisection over time. The archive's own records tell, for any span, how many it holds
(their time stamps); one 1-record request tells the server's total for the span. Where the two
differ, the span is cut at the median archived stamp (each half holds half of the archived
records) and only the left half is asked (the right half's total is the difference); halves
that agree are done. A span whose server total fits in one page is fetched, and the records of
it the archive lacks (by id) are added to the stream window the span lies in, as a new part
file. One late record in a stream of N records at P per page costs about log2(N / P) + 1
requests instead of the N / P a refetch of the stream would.

Spans are half-open, [startTime, endTime), as the archive's windows are (the contract leaves
this UNSPECIFIED; a server counting both ends would cost extra requests, never records: a
fetched span is matched to the archive by id). The late records of a window follow its
earlier parts: the window's files together hold its records, not in time order.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson

from hyperstudy_bulk.client import ApiClient
from hyperstudy_bulk.config import Settings
from hyperstudy_bulk.manifest import FileEntry, Manifest, StreamEntry
from hyperstudy_bulk.pager import Chunk, StreamProgress, fetch_stream
from hyperstudy_bulk.pagesize import PageSizes
from hyperstudy_bulk.part_files import PartNumbers
from hyperstudy_bulk.plan import StreamSpec
from hyperstudy_bulk.runner import spec_of, total_of
from hyperstudy_bulk.sinks import StreamSink, ndjson
from hyperstudy_bulk.timespec import iso_utc, parse_iso

Span = tuple[str | None, str]
Count = Callable[[str | None, str], Awaitable[int]]
"""The server's total over [start, end) (start None: from the beginning)."""


async def late_spans(
    stamps: Sequence[str],
    start: str | None,
    end: str,
    server: int,
    count: Count,
    *,
    page_size: int,
) -> list[Span]:
    """Spans, each about a page of records or less, that hold every record the server counts
    in [start, end) beyond the archive's. `stamps` are the archived records' times in the
    span, sorted, in `iso_utc` spelling; `server` is the server's total for the span."""
    if server <= len(stamps):
        return []
    cut = _median_cut(stamps)
    if server <= page_size or cut is None:
        return [(start, end)]
    left = bisect_left(stamps, cut)
    left_server = await count(start, cut)
    return [
        *await late_spans(stamps[:left], start, cut, left_server, count, page_size=page_size),
        *await late_spans(
            stamps[left:], cut, end, server - left_server, count, page_size=page_size
        ),
    ]


def _median_cut(stamps: Sequence[str]) -> str | None:
    """A stamp cutting `stamps` into two non-empty halves (before it; from it on), or None
    when they are all the same moment."""
    if not stamps:
        return None
    cut = stamps[len(stamps) // 2]
    if bisect_left(stamps, cut) == 0:
        after = bisect_right(stamps, cut)
        if after == len(stamps):
            return None
        cut = stamps[after]
    return cut


def pieces(span: Span, entries: Sequence[StreamEntry]) -> list[tuple[StreamEntry, Span]]:
    """`span` cut at the stream's window bounds: each piece with the window entry it is in."""
    start, end = span
    found: list[tuple[StreamEntry, Span]] = []
    for entry in entries:
        low, high = entry.params.get("startTime"), entry.params["endTime"]
        piece_start = low if start is None or (low is not None and low > start) else start
        piece_end = min(end, high)
        if piece_start is None or piece_start < piece_end:
            found.append((entry, (piece_start, piece_end)))
    return found


def _archived(folder: Path, entries: Sequence[StreamEntry]) -> tuple[list[str], set[Any]]:
    """The stream's archived time stamps (sorted, `iso_utc` spelling) and ids."""
    data_type = spec_of(entries[0]).data_type
    stamps: list[str] = []
    ids: set[Any] = set()
    for entry in entries:
        for file in entry.files:
            with (folder / file.path).open("rb") as stream:
                for line in stream:
                    record = orjson.loads(line)
                    ids.add(record.get(data_type.id_field or ""))
                    moment = record.get(data_type.time_field)
                    if isinstance(moment, str):
                        stamps.append(iso_utc(parse_iso(moment)))
    stamps.sort()
    return stamps, ids


async def add_late_records(
    api: ApiClient,
    settings: Settings,
    folder: Path,
    manifest: Manifest,
    entries: Sequence[StreamEntry],
    server_total: int,
) -> int:
    """Find one stream's late records (its `entries`, every window, complete; the server
    counts `server_total` over them now) and add them to their windows; the manifest is saved
    after each new file. Returns the records added."""
    entries = sorted(entries, key=lambda entry: entry.window)
    spec = spec_of(entries[0])
    stamps, known = await asyncio.to_thread(_archived, folder, entries)

    async def count(start: str | None, end: str) -> int:
        return await total_of(api, spec, spec.params(start_time=start, end_time=end))

    sizes = PageSizes(
        fixed=settings.fixed_page_size,
        maximum=settings.max_page_size,
        learned=manifest.page_sizes,
    )
    page_size = sizes.expected(spec.data_type.folder)
    start, end = entries[0].params.get("startTime"), entries[-1].params["endTime"]
    spans = await late_spans(stamps, start, end, server_total, count, page_size=page_size)
    added = 0
    for span in spans:
        for entry, (low, high) in pieces(span, entries):
            records, ids = await _fetch(
                api, spec, spec.params(start_time=low, end_time=high), sizes
            )
            new = [r for r, i in zip(records, ids, strict=True) if i not in known]
            known.update(ids)
            if new:
                await asyncio.to_thread(_append_part, folder, manifest, entry, spec, new, settings)
                added += len(new)
    return added


async def _fetch(
    api: ApiClient, spec: StreamSpec, params: dict[str, str], sizes: PageSizes
) -> tuple[list[msgspec.Raw], list[Any]]:
    records: list[msgspec.Raw] = []
    ids: list[Any] = []

    async def collect(chunk: Chunk) -> None:
        records.extend(chunk.records)
        ids.extend(chunk.ids)

    await fetch_stream(
        api,
        spec,
        params,
        page_sizes=sizes,
        lookahead=lambda: 1,
        on_chunk=collect,
        progress=StreamProgress(),
    )
    return records, ids


def _append_part(
    folder: Path,
    manifest: Manifest,
    entry: StreamEntry,
    spec: StreamSpec,
    records: list[msgspec.Raw],
    settings: Settings,
) -> None:
    """Publish `records` as the stream's next part file, then the manifest that lists it in
    `entry` (a crash between the two leaves a file no record names, which part_files.sweep
    removes; the next cycle finds the records late again)."""
    numbers = PartNumbers(folder, manifest)
    sink = StreamSink(
        folder,
        spec.stem,
        part_max_bytes=settings.part_max_mb << 20,
        claim=lambda: numbers.claim(entry.key),
        empty_file=False,
    )
    try:
        sink.write(ndjson(records), len(records))
        files = sink.finish()
    finally:
        sink.close()
    entry.files += [FileEntry(f.path, f.records, f.bytes, f.sha256) for f in files]
    entry.records += len(records)
    entry.server_total = (entry.server_total or 0) + len(records)
    entry.bytes += sum(f.bytes for f in files)
    manifest.save(folder)
