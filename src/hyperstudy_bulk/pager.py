"""Fetch one stream's pages: the first alone, then the rest several at a time, written in order.

The first page tells the total and the effective limit; from then on up to `lookahead` pages
are in flight, their offsets guessed with `pagination.next_requests` and checked against what
the server says. Each page is re-encoded to NDJSON as soon as it arrives (the decoded objects
are dropped), and chunks are handed to `on_chunk` strictly in offset order, so records land on
disk in the order the API serves them and memory is bounded by `lookahead` encoded pages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hyperstudy_bulk.client import ApiClient
from hyperstudy_bulk.pagination import check_progress, next_requests
from hyperstudy_bulk.plan import StreamSpec
from hyperstudy_bulk.sinks import encode_records


@dataclass(frozen=True)
class Chunk:
    """One page, ready to append: its NDJSON bytes and the server's pagination figures."""

    offset: int
    end: int
    total: int
    limit: int
    has_more: bool
    records: int
    ndjson: bytes
    ids: tuple[Any, ...]
    """The records' id field values (None where a record has none), for discovery and checks."""
    warnings: tuple[str, ...]


@dataclass
class StreamProgress:
    """What a stream has done so far; the runner copies it into the manifest."""

    total: int | None = None
    records: int = 0
    pages: int = 0
    requests: int = 0
    wasted_requests: int = 0
    warnings: list[str] = field(default_factory=list)


async def fetch_stream(
    api: ApiClient,
    spec: StreamSpec,
    params: Mapping[str, str],
    *,
    page_size: int,
    lookahead: int,
    on_chunk: Callable[[Chunk], None],
    progress: StreamProgress,
) -> None:
    """Fetch every page of `spec` from offset 0, calling `on_chunk` for each in order.

    Raises the first error a page ends with (after its retries); pages still in flight are
    cancelled, so cancelling this coroutine leaves nothing running.
    """
    id_field = spec.data_type.id_field

    async def fetch(offset: int, limit: int) -> Chunk:
        progress.requests += 1
        page = await api.get_page(spec.endpoint, spec.segments, params, offset=offset, limit=limit)
        check_progress(offset=page.offset, end=page.end, total=page.total, has_more=page.has_more)
        return Chunk(
            offset=page.offset,
            end=page.end,
            total=page.total,
            limit=page.limit,
            has_more=page.has_more,
            records=page.returned,
            ndjson=encode_records(page.records),
            ids=tuple(record.get(id_field) for record in page.records) if id_field else (),
            warnings=page.warnings,
        )

    def accept(chunk: Chunk) -> None:
        progress.total = chunk.total
        progress.pages += 1
        progress.records += chunk.records
        progress.warnings.extend(w for w in chunk.warnings if w not in progress.warnings)
        on_chunk(chunk)

    chunk = await fetch(0, page_size)
    accept(chunk)
    stride = max(1, chunk.limit)
    in_flight: dict[int, tuple[int, asyncio.Task[Chunk]]] = {}
    try:
        while chunk.has_more:
            frontier = chunk.end
            for request in next_requests(
                frontier=frontier,
                total=chunk.total,
                stride=stride,
                in_flight={offset: limit for offset, (limit, _) in in_flight.items()},
                room=lookahead - len(in_flight),
            ):
                task = asyncio.ensure_future(fetch(request.offset, request.limit))
                in_flight[request.offset] = (request.limit, task)
            _, task = in_flight.pop(frontier)
            chunk = await task
            accept(chunk)
            for offset in [offset for offset in in_flight if offset < chunk.end]:
                progress.wasted_requests += 1
                in_flight.pop(offset)[1].cancel()
    finally:
        progress.wasted_requests += len(in_flight)
        for _, task in in_flight.values():
            task.cancel()
        if in_flight:
            await asyncio.gather(*(task for _, task in in_flight.values()), return_exceptions=True)
