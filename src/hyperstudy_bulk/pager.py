"""Fetch one stream's pages: the first alone, then the rest several at a time, handed on in order.

The first page tells the total and the effective limit (its size comes from `PageSizes`: the
largest the server grants, see pagesize.py); from then on up to `lookahead()` pages
are in flight (asked before each page, so a stream may look further ahead as others finish),
their offsets guessed with `pagination.next_requests` and checked against what the server says.
Pages keep their records as the JSON text served (nothing is decoded into Python objects), and
chunks are handed to `on_chunk` strictly in offset order, so records land on disk in the order
the API serves them and memory is bounded by the look-ahead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from hyperstudy_bulk.client import ApiClient
from hyperstudy_bulk.errors import HyperStudyBulkError
from hyperstudy_bulk.pagesize import PageSizes
from hyperstudy_bulk.pagination import check_progress, next_requests
from hyperstudy_bulk.plan import StreamSpec


@dataclass(frozen=True)
class Chunk:
    """One page, ready to append: the records' JSON texts and ids, the server's figures."""

    offset: int
    end: int
    total: int
    limit: int
    has_more: bool
    records: list[msgspec.Raw]
    ids: list[Any]
    """The id field of each record (None where a record has none; all None for a type
    without an id field)."""
    warnings: tuple[str, ...]


@dataclass
class StreamProgress:
    """Requests a stream made, for the manifest and the progress display."""

    requests: int = 0
    warnings: list[str] = field(default_factory=list)
    in_transit: Callable[[int], None] = lambda pages: None
    """Told of each page received (+1) and of each handed on or dropped (-1): pages fetched
    ahead wait behind an earlier page or a busy event loop, and their requests are spent
    although their records are not counted yet."""


async def fetch_stream(
    api: ApiClient,
    spec: StreamSpec,
    params: Mapping[str, str],
    *,
    start: int = 0,
    page_sizes: PageSizes,
    lookahead: Callable[[], int],
    on_chunk: Callable[[Chunk], Awaitable[None]],
    progress: StreamProgress,
) -> None:
    """Fetch every page of `spec` from offset `start`, awaiting `on_chunk` for each in order.

    Raises the first error a page ends with (after its retries); pages still in flight are
    cancelled, so cancelling this coroutine leaves nothing running. A page refused or failing
    for its size is asked again at the smaller size `page_sizes` gives.
    """
    id_field = spec.data_type.id_field
    data_type = spec.data_type.folder
    auto = page_sizes.fixed is None
    stride = 1

    async def fetch(offset: int, limit: int) -> Chunk:
        nonlocal stride
        while True:
            progress.requests += 1
            try:
                page = await api.get_page(
                    spec.endpoint,
                    spec.segments,
                    params,
                    offset=offset,
                    limit=limit,
                    id_field=id_field,
                    shrinkable=auto,
                )
                break
            except HyperStudyBulkError as error:
                smaller = page_sizes.smaller(data_type, limit, error)
                if smaller is None:
                    raise
                limit = stride = smaller
        page_sizes.granted(
            data_type, asked=limit, limit=page.limit, returned=page.returned, more=page.has_more
        )
        check_progress(offset=page.offset, end=page.end, total=page.total, has_more=page.has_more)
        progress.in_transit(1)
        return Chunk(
            offset=page.offset,
            end=page.end,
            total=page.total,
            limit=page.limit,
            has_more=page.has_more,
            records=page.records,
            ids=page.ids,
            warnings=page.warnings,
        )

    async def accept(chunk: Chunk) -> None:
        progress.warnings.extend(w for w in chunk.warnings if w not in progress.warnings)
        try:
            await on_chunk(chunk)
        finally:
            progress.in_transit(-1)

    def drop(task: asyncio.Task[Chunk]) -> None:
        """Cancel a page not needed (any more); one already received leaves transit."""
        if task.done() and not task.cancelled() and task.exception() is None:
            progress.in_transit(-1)
        task.cancel()

    try:
        chunk = await fetch(start, await page_sizes.first_limit(data_type))
    finally:
        page_sizes.settled(data_type)
    await accept(chunk)
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
                room=max(1, lookahead()) - len(in_flight),
            ):
                task = asyncio.ensure_future(fetch(request.offset, request.limit))
                in_flight[request.offset] = (request.limit, task)
            _, task = in_flight.pop(frontier)
            chunk = await task
            await accept(chunk)
            for offset in [offset for offset in in_flight if offset < chunk.end]:
                drop(in_flight.pop(offset)[1])
    finally:
        for _, task in in_flight.values():
            drop(task)
        if in_flight:
            await asyncio.gather(*(task for _, task in in_flight.values()), return_exceptions=True)


async def stream_ids(
    api: ApiClient,
    spec: StreamSpec,
    params: Mapping[str, str],
    *,
    page_sizes: PageSizes,
    lookahead: int,
) -> tuple[list[Any], int]:
    """Page through a stream only for its records' ids (and its total), writing nothing:
    discovery of rooms and participants when their listings are not archived."""
    ids: list[Any] = []
    total = 0

    async def collect(chunk: Chunk) -> None:
        nonlocal total
        total = chunk.total
        ids.extend(chunk.ids)

    await fetch_stream(
        api,
        spec,
        params,
        page_sizes=page_sizes,
        lookahead=lambda: lookahead,
        on_chunk=collect,
        progress=StreamProgress(),
    )
    return ids, total
