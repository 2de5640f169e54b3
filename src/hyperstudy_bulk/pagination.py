"""Offset arithmetic for pipelined paging. Pure: no I/O, no clock.

The server's metadata is the truth: a page at `offset` covers the offsets up to its
`nextOffset` (or to its end when it is the last), `total` bounds the stream, and the effective
`limit` it reported is the stride for guessing where later pages start. Guesses let a stream
fetch several pages at once; a guess the server contradicts (a short page) is repaired by asking
for exactly the gap, so no record is fetched twice and no request is wasted unless the server
skips ahead of a guess.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperstudy_bulk.errors import ContractError


@dataclass(frozen=True)
class Request:
    offset: int
    limit: int


def next_requests(
    *, frontier: int, total: int, stride: int, in_flight: Mapping[int, int], room: int
) -> list[Request]:
    """Requests to add so that up to `room` more pages are in flight, earliest offsets first.

    `frontier` is the first offset not yet written, `in_flight` maps the offsets already asked
    for to their limits. New requests start at the frontier or where an in-flight one ends, and
    never overlap an in-flight one: a request is cut short to end where the next begins.
    The frontier itself is asked for whenever nothing in flight starts there, even with no
    room left (a short page leaves a gap there, and the pager awaits that page next).
    """
    if stride < 1:
        raise ValueError("stride must be >= 1")
    starts = sorted(in_flight)
    added: list[Request] = []
    cursor = frontier
    while cursor < total and (len(added) < room or cursor == frontier):
        if cursor in in_flight:
            cursor += in_flight[cursor]
            continue
        following = bisect.bisect_right(starts, cursor)
        limit = stride
        if following < len(starts):
            limit = min(stride, starts[following] - cursor)
        added.append(Request(cursor, limit))
        cursor += limit
    return added


def check_progress(*, offset: int, end: int, total: int, has_more: bool) -> None:
    """Raise ContractError for a page that would make the stream loop or run on forever."""
    if has_more and end <= offset:
        raise ContractError(f"nextOffset {end} does not move past offset {offset}")
    if has_more and end >= total:
        raise ContractError(
            f"server says more pages follow offset {offset} but nextOffset {end} "
            f"is not below its total {total}"
        )


def pages_needed(total: int, limit: int) -> int:
    """Requests a stream of `total` records needs at `limit` per page (an empty one needs 1)."""
    return max(1, -(-total // max(1, limit)))


@dataclass(frozen=True)
class Kept:
    """Which records of a page to write, and why the others were dropped."""

    indices: list[int]
    repeated: int
    """Ids already written on the previous page: the offsets shifted between two requests."""
    archived: int
    """Ids the archive held before this window began (an overlap at the window's edge, or an
    entity of a listing seen before)."""
    server_repeated: int
    """Ids repeated within this one response: duplicates in the server's own data."""
    page_ids: set[Any]
    """Every plain id on this page: the `previous` of the next page."""


def drop_repeats(
    ids: Sequence[Any], previous: Collection[Any], archived: Collection[Any] = ()
) -> Kept:
    """Keep each record whose id was not on the previous page, not in the archive already, and
    not earlier on this page.

    Records without an id (None, or an id that is not a plain value) are always kept. Only the
    previous page is consulted for shifts: with the crawl bounded by a snapshot time, rows
    inserted later shift offsets by a few places, so a repeat can only straddle one page
    boundary; memory stays bounded by a page whatever the stream's length.
    """
    try:
        distinct = set(ids)
    except TypeError:  # an unhashable id: go record by record
        distinct = set()
    if (
        len(distinct) == len(ids)
        and None not in distinct
        and distinct.isdisjoint(previous)
        and distinct.isdisjoint(archived)
    ):
        return Kept(list(range(len(ids))), 0, 0, 0, distinct)  # the usual page: nothing to drop
    seen: set[Any] = set()
    kept: list[int] = []
    repeated = overlap = server_repeated = 0
    for index, identifier in enumerate(ids):
        if identifier is None or not isinstance(identifier, str | int):
            kept.append(index)
        elif identifier in seen:
            server_repeated += 1
        else:
            seen.add(identifier)
            if identifier in archived:
                overlap += 1
            elif identifier in previous:
                repeated += 1
            else:
                kept.append(index)
    return Kept(kept, repeated, overlap, server_repeated, seen)
