"""Offset arithmetic: every offset of a stream is covered exactly once, whatever the server does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperstudy_bulk.errors import ContractError
from hyperstudy_bulk.pagination import Request, check_progress, next_requests, pages_needed


def test_first_guesses_follow_the_effective_limit() -> None:
    assert next_requests(frontier=1000, total=4500, stride=1000, in_flight={}, room=8) == [
        Request(1000, 1000),
        Request(2000, 1000),
        Request(3000, 1000),
        Request(4000, 1000),
    ]


def test_room_bounds_the_look_ahead() -> None:
    assert next_requests(frontier=0, total=10_000, stride=100, in_flight={}, room=2) == [
        Request(0, 100),
        Request(100, 100),
    ]


def test_a_short_page_is_repaired_with_exactly_the_gap() -> None:
    # The page at 1000 came back with 900 rows and nextOffset 1900; 2000.. is already asked for.
    requests = next_requests(
        frontier=1900, total=5000, stride=1000, in_flight={2000: 1000, 3000: 1000}, room=3
    )
    assert requests == [Request(1900, 100), Request(4000, 1000)]


def test_the_gap_at_the_frontier_is_asked_for_even_with_no_room_left() -> None:
    # Four pages were in flight when the page at 100 came back short (50 rows); the stream's
    # share of look-ahead has since dropped to one page.
    requests = next_requests(
        frontier=150, total=1000, stride=100, in_flight={200: 100, 300: 100, 400: 100}, room=-2
    )
    assert requests == [Request(150, 50)]


def test_nothing_is_asked_past_the_total() -> None:
    assert next_requests(frontier=3000, total=3000, stride=1000, in_flight={}, room=4) == []


@pytest.mark.parametrize(
    ("offset", "end", "total", "message"),
    [
        (1000, 1000, 5000, "does not move past"),
        (1000, 900, 5000, "does not move past"),
        (4000, 5000, 5000, "is not below its total"),
    ],
)
def test_pagers_that_would_loop_or_never_end_are_refused(
    offset: int, end: int, total: int, message: str
) -> None:
    with pytest.raises(ContractError, match=message):
        check_progress(offset=offset, end=end, total=total, has_more=True)


def test_last_page_may_end_anywhere() -> None:
    check_progress(offset=4000, end=4000, total=4000, has_more=False)


@pytest.mark.parametrize(
    ("total", "limit", "pages"), [(0, 1000, 1), (1000, 1000, 1), (1001, 1000, 2)]
)
def test_pages_needed(total: int, limit: int, pages: int) -> None:
    assert pages_needed(total, limit) == pages


def _serve(
    offset: int, limit: int, total: int, cap: int, short: frozenset[int]
) -> tuple[int, bool]:
    """A consistent server: caps the limit, returns one row fewer at some offsets."""
    size = min(limit, cap, total - offset)
    if offset in short and size > 1:
        size -= 1
    end = offset + size
    return end, end < total


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(0, 3000),
    page_size=st.integers(1, 400),
    cap=st.integers(1, 400),
    shares=st.lists(st.integers(-2, 12), min_size=1, max_size=20),
    short=st.frozensets(st.integers(0, 3000), max_size=40),
)
def test_every_offset_is_written_exactly_once(
    total: int,
    page_size: int,
    cap: int,
    shares: list[int],
    short: frozenset[int],
) -> None:
    """Drive the planner like the pager does against a server that caps and shortens pages,
    while the stream's fair share of look-ahead grows and shrinks (other streams start and
    finish): the page at the frontier is always in flight when the pager awaits it."""
    end, has_more = _serve(0, page_size, total, cap, short)
    written = list(range(0, end))
    stride = min(page_size, cap)
    in_flight: dict[int, int] = {}
    pages = 0
    while has_more:
        frontier = end
        look_ahead = max(1, shares[pages % len(shares)])
        pages += 1
        for request in next_requests(
            frontier=frontier,
            total=total,
            stride=stride,
            in_flight=in_flight,
            room=look_ahead - len(in_flight),
        ):
            assert request.offset not in in_flight
            in_flight[request.offset] = request.limit
        limit = in_flight.pop(frontier)
        end, has_more = _serve(frontier, limit, total, cap, short)
        check_progress(offset=frontier, end=end, total=total, has_more=has_more)
        written.extend(range(frontier, end))
        for offset in [o for o in in_flight if o < end]:
            del in_flight[offset]
    assert written == list(range(total))
