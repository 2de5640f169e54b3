"""The only module that speaks HTTP to the API: one aiohttp session per run, every request
through the shared budget and the retry policy, every body through `envelope`.

The API key is sent as X-API-Key on requests to the configured base URL only: it is not a
session default header, redirects are not followed, and server-supplied messages are redacted
before they become exceptions.
"""

from __future__ import annotations

import email.utils
import functools
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from hyperstudy_bulk._version import __version__
from hyperstudy_bulk.budget import Budget
from hyperstudy_bulk.concurrency import ConcurrencyGate, VegasLimit
from hyperstudy_bulk.config import ApiKey
from hyperstudy_bulk.envelope import Page, decode_error, decode_object, decode_page
from hyperstudy_bulk.errors import ApiError, HyperStudyBulkError, TlsError, TransportError
from hyperstudy_bulk.pagesize import PageTooLarge, too_large
from hyperstudy_bulk.retry import RetryPolicy, call_with_retries

T = TypeVar("T")
E = TypeVar("E", bound=HyperStudyBulkError)


@dataclass
class RequestStats:
    """What the run's requests did: counts by status, retries by cause, bytes received."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    bytes_received: int = 0


def path_of(*segments: str) -> str:
    """A URL path from segments; untrusted ids are percent-encoded, '/' included."""
    return "/".join(quote(segment, safe="") for segment in segments)


def new_session(
    *,
    pool: int,
    connect_timeout: float,
    read_timeout: float,
    accept: str | None = None,
    auto_decompress: bool = True,
) -> aiohttp.ClientSession:
    """A pooled session with separate connect and read timeouts (no overall limit: a large
    body may take long as long as bytes keep coming). It carries no credentials."""
    headers = {"User-Agent": f"hyperstudy-bulk/{__version__}"}
    if accept is not None:
        headers["Accept"] = accept
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=pool, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        ),
        headers=headers,
        auto_decompress=auto_decompress,
    )


class SessionHolder:
    """An async context manager around one aiohttp session, made by `_new_session` on entry
    and closed on exit."""

    _session: aiohttp.ClientSession | None = None

    def _new_session(self) -> aiohttp.ClientSession:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._session = self._new_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ApiClient(SessionHolder):
    """`async with ApiClient(...) as api:` then `await api.get_page(...)`.

    Usable inside any running event loop; holds no global state. Cancelling a call cancels its
    HTTP request and returns its budget permits. `concurrency` is a fixed number of requests in
    flight, or a VegasLimit that the requests' latencies and failures adapt.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: ApiKey,
        budget: Budget,
        retry: RetryPolicy,
        concurrency: int | VegasLimit,
        timeout: float,
        connect_timeout: float,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._key = api_key
        self.budget = budget
        self._retry = retry
        self.concurrency = ConcurrencyGate(concurrency)
        self._timeouts = (connect_timeout, timeout)
        self._log = log
        self.stats = RequestStats()

    def _new_session(self) -> aiohttp.ClientSession:
        connect, read = self._timeouts
        return new_session(
            pool=self.concurrency.maximum,
            connect_timeout=connect,
            read_timeout=read,
            accept="application/json",
        )

    async def get_page(
        self,
        endpoint: str,
        segments: Sequence[str],
        params: Mapping[str, str | int],
        *,
        offset: int,
        limit: int,
        id_field: str | None = None,
        shrinkable: bool = False,
    ) -> Page:
        """One page of a paginated data route at `offset`, retried as the policy allows;
        `id_field` names the record field whose values the Page lists as ids. With
        `shrinkable`, a large page failing as large pages do raises PageTooLarge at once
        instead of being retried at the same size."""
        query = {**params, "offset": offset, "limit": limit}
        page = await self._get(
            endpoint,
            segments,
            query,
            lambda body: decode_page(
                body, requested_offset=offset, requested_limit=limit, id_field=id_field
            ),
            limit=limit,
            shrinkable=shrinkable,
        )
        if page.warnings:  # shown to the user and kept in the manifest
            page = replace(page, warnings=tuple(map(self._key.redact, page.warnings)))
        return page

    async def get_object(self, endpoint: str, segments: Sequence[str]) -> dict[str, Any]:
        """The `data` object of a single-object route."""
        return await self._get(endpoint, segments, {}, decode_object)

    async def _get(
        self,
        endpoint: str,
        segments: Sequence[str],
        query: Mapping[str, str | int],
        decode: Callable[[bytes], T],
        *,
        limit: int = 0,
        shrinkable: bool = False,
    ) -> T:
        url = URL(f"{self._base}/{path_of(*segments)}", encoded=True).with_query(
            {k: str(v) for k, v in query.items()}
        )

        async def attempt() -> T:
            try:
                async with (
                    self.concurrency.slot(kind=limit) as timing,
                    self.budget.slot(endpoint),
                ):
                    timing.sent()
                    try:
                        status, headers, body = await self._fetch(url)
                    except TransportError:
                        timing.failed()
                        raise
                    if status != 429:
                        timing.answered(overloaded=status >= 500)
                self._observe_limits(headers)
                if 200 <= status < 300:
                    try:
                        return decode(body)
                    except HyperStudyBulkError as error:  # its message may quote the body
                        raise self._redacted(error) from None
                raise self._error(status, headers, body)
            except (ApiError, TransportError) as error:
                if shrinkable and too_large(error, limit):
                    raise PageTooLarge(error) from None
                raise

        where = path_of(*segments) + (f" offset {query['offset']}" if "offset" in query else "")
        return await call_with_retries(
            attempt, self._retry, on_retry=functools.partial(self._on_retry, where)
        )

    async def _fetch(self, url: URL) -> tuple[int, CIMultiDictProxy[str], bytes]:
        assert self._session is not None, "use `async with ApiClient(...)`"
        started = time.monotonic()
        self.stats.requests += 1
        try:
            async with self._session.get(
                url, headers={"X-API-Key": self._key.reveal()}, allow_redirects=False
            ) as response:
                body = await response.read()
        except TimeoutError:
            raise TransportError(
                f"no response within the timeout ({time.monotonic() - started:.0f} s)",
                cause="timeout",
            ) from None
        except aiohttp.ClientSSLError as error:
            raise TlsError(
                f"the TLS certificate of {url.host} could not be verified ({error}); check "
                "--base-url"
            ) from None
        except aiohttp.ClientPayloadError as error:
            raise TransportError(f"response body cut short ({error})", cause="truncated") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
            raise TransportError(f"connection reset ({error})", cause="reset") from None
        except aiohttp.ClientConnectionError as error:
            raise TransportError(f"cannot connect ({error})", cause="connection") from None
        self.stats.by_status[response.status] += 1
        self.stats.bytes_received += len(body)
        return response.status, response.headers, body

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> ApiError:
        retry_after = _retry_after(headers.get("Retry-After"))
        error = self._redacted(decode_error(status, body, retry_after=retry_after))
        if status == 429:
            self.budget.rate_limited(
                retry_after if retry_after is not None else self._retry.rate_limited_wait
            )
        return error

    def _redacted(self, error: E) -> E:
        """`error` with the key cut out of its message: servers may echo what they were sent."""
        error.args = (self._key.redact(str(error)),)
        return error

    def _observe_limits(self, headers: Mapping[str, str]) -> None:
        remaining = _seconds(headers.get("X-RateLimit-Remaining"))
        reset = _seconds(headers.get("X-RateLimit-Reset"))
        self.budget.observe(None if remaining is None else int(remaining), reset)

    def _on_retry(self, where: str, cause: str, wait: float) -> None:
        """Count a retry and log it with the request's route and offset: which stream it is."""
        self.stats.retries[cause] += 1
        self._log(f"{where}: retrying after {cause} in {wait:.1f} s")


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delay-seconds (fractions accepted) or an HTTP-date."""
    seconds = _seconds(value)
    if seconds is not None or value is None:
        return seconds
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _seconds(value: str | None) -> float | None:
    """A finite non-negative number from a header, or None when absent or unreadable (inf,
    nan, 1e999 and negative numbers are ignored as if absent)."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


__all__ = ["ApiClient", "RequestStats", "path_of"]
