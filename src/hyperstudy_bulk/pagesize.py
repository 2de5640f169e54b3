"""Page size per data type: the largest page the server grants, learned once per run.

With `--page-size auto` the first page of each data type asks for `--max-page-size` records
(10,000 by default; the API documents 1000 as the default and no maximum) and the data type
continues with what the server answered:

- a page comes back: its `pagination.limit` is what the server granted (when the server does
  not say, a page that has more after it and returned fewer than asked tells the same);
- a 400 on a page larger than the documented 1000: the limit was refused. The data type drops to
  the maximum the error's details name (`max`, `maximum`, `maxLimit`, or a number in `expected`
  when `parameter` is `limit`), or to 1000;
- a timeout, a 504 or a 413 on a page larger than 1000: the page was too much for the server.
  The data type's size halves (never below 1000) and the page is asked again at once, instead
  of being retried at the same size.

While a data type's first page is out, other streams of that type wait for its answer, so a
server that refuses large limits costs one extra request per data type, not one per stream.
The sizes learned are written in the manifest (`page_sizes`) and seed the next run (resume,
`--update`, `plan`). A fixed `--page-size N` is used as is: no probing, no shrinking.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

from hyperstudy_bulk.errors import ApiError, HyperStudyBulkError, TransportError

DOCUMENTED_PAGE_SIZE = 1000
"""The API's default and suggested page size (contract §7): the floor of every fallback."""

_TOO_LARGE_STATUSES = (413, 504)


class PageTooLarge(HyperStudyBulkError):
    """A large page failed the way large pages fail (timeout, 504, 413): ask a smaller one
    rather than retrying the same. Not transient, so the retry policy hands it straight back."""

    def __init__(self, error: HyperStudyBulkError) -> None:
        super().__init__(str(error))
        self.error = error


def too_large(error: BaseException, limit: int) -> bool:
    """Whether `error` on a page of `limit` records says the page was too much for the server."""
    if limit <= DOCUMENTED_PAGE_SIZE:
        return False
    if isinstance(error, TransportError):
        return error.cause == "timeout"
    return isinstance(error, ApiError) and error.status in _TOO_LARGE_STATUSES


def refused_size(error: BaseException, limit: int) -> int | None:
    """The page size to use after `error` on a page of `limit` records, or None when the error
    is not about the size (then it stands)."""
    if limit <= DOCUMENTED_PAGE_SIZE:
        return None
    if isinstance(error, PageTooLarge):
        return max(DOCUMENTED_PAGE_SIZE, limit // 2)
    if isinstance(error, ApiError) and error.status == 400:
        named = _named_maximum(error.details)
        if named is not None and 1 <= named < limit:
            return named
        return DOCUMENTED_PAGE_SIZE
    return None


def _named_maximum(details: object) -> int | None:
    """The largest allowed limit an error's details name, if they name one."""
    if not isinstance(details, Mapping):
        return None
    for key in ("max", "maximum", "maxLimit", "max_limit", "maxPageSize"):
        value = details.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    expected = details.get("expected")
    if details.get("parameter") == "limit" and isinstance(expected, str):
        numbers = [int(n) for n in re.findall(r"\d+", expected)]
        return max(numbers) if numbers else None
    return None


class PageSizes:
    """The page size of each data type for one run (see the module docstring).

    `fixed` is a `--page-size N`; None means auto, starting at `maximum`. `learned` seeds the
    sizes a previous run settled on (the manifest's `page_sizes`)."""

    def __init__(
        self, *, fixed: int | None, maximum: int, learned: Mapping[str, int] | None = None
    ) -> None:
        self.fixed = fixed
        self.maximum = maximum
        self._sizes: dict[str, int] = dict(learned or {})
        self._probes: dict[str, asyncio.Event] = {}

    @property
    def learned(self) -> dict[str, int]:
        """Each data type's working size so far (for the manifest)."""
        return dict(sorted(self._sizes.items()))

    def expected(self, data_type: str) -> int:
        """The size estimates should count on: fixed, learned, or the documented default."""
        return self.fixed or self._sizes.get(data_type, DOCUMENTED_PAGE_SIZE)

    def largest(self) -> int:
        """No page of this run holds more records than this."""
        return self.fixed or max(self.maximum, *self._sizes.values(), 1)

    async def first_limit(self, data_type: str) -> int:
        """The limit for a stream's first page. The first stream of an unsettled data type
        probes at the maximum; the others wait for its answer."""
        if self.fixed is not None:
            return self.fixed
        while data_type not in self._sizes:
            probe = self._probes.get(data_type)
            if probe is None:
                self._probes[data_type] = asyncio.Event()
                return self.maximum
            await probe.wait()
        return self._sizes[data_type]

    def granted(self, data_type: str, *, asked: int, limit: int, returned: int, more: bool) -> None:
        """A page of `asked` came back with the server's `limit` and `returned` records."""
        if self.fixed is not None:
            return
        size = returned if more and 0 < returned < limit else limit
        size = max(1, min(size, asked))
        if data_type not in self._sizes or size < self._sizes[data_type]:
            self._sizes[data_type] = size
        self.settled(data_type)

    def smaller(self, data_type: str, limit: int, error: BaseException) -> int | None:
        """After `error` on a page of `limit`: the smaller size to ask again with (now the data
        type's size), or None when the error is not about the size."""
        if self.fixed is not None:
            return None
        size = refused_size(error, limit)
        if size is None:
            return None
        self._sizes[data_type] = min(size, self._sizes.get(data_type, size))
        return size

    def settled(self, data_type: str) -> None:
        """The first page of a stream of `data_type` ended, answered or not: streams waiting
        for the probe go on (with the size learned, or one of them probes again)."""
        probe = self._probes.pop(data_type, None)
        if probe is not None:
            probe.set()


__all__ = ["DOCUMENTED_PAGE_SIZE", "PageSizes", "PageTooLarge", "refused_size", "too_large"]
