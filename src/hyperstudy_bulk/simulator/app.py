"""The aiohttp application: routing on raw paths, auth, limits, faults, and the handlers.

Routing matches the raw (still percent-encoded) path and unquotes each segment, so ids containing
"/", "..", "\\" or control characters round-trip when clients percent-encode them.
Pipeline of an API request: count attempt -> latency -> auth -> scope -> Retry-After bookkeeping
-> 429 burst -> rate limit -> fault draw -> handler. /health is open and never limited or faulted;
/_sim/* admin routes (stats, reset, faults, mutate) are neither counted, limited nor faulted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from hyperstudy_bulk.simulator import envelope, media
from hyperstudy_bulk.simulator.cache import PageCache
from hyperstudy_bulk.simulator.config import SimulatorConfig
from hyperstudy_bulk.simulator.dataset import DATA_TYPES, Dataset
from hyperstudy_bulk.simulator.errors import (
    ApiError,
    Forbidden,
    GatewayTimeout,
    InvalidParameter,
    NotFound,
    RateLimited,
    Unauthenticated,
)
from hyperstudy_bulk.simulator.faults import (
    API_KINDS,
    MEDIA_KINDS,
    MINT_KINDS,
    FaultSpec,
    request_key,
)
from hyperstudy_bulk.simulator.ids import api_key_for_seed, hash_ints, hash_text, unit
from hyperstudy_bulk.simulator.limits import Decision, RateLimiter
from hyperstudy_bulk.simulator.records import Record, iso_ms
from hyperstudy_bulk.simulator.stats import Stats

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
API_PREFIX = "/api/v3/"
IN_FLIGHT_GRACE_S = 0.25
"""Requests arriving this soon after a 429 were sent before the client could have seen it."""
_REQUIRED_SCOPES = {
    "events": ("read:events",),
    "recordings": ("read:recordings",),
    "chat": ("read:chat",),
    "videochat": ("read:videochat",),
    "ratings/continuous": ("read:ratings",),
    "ratings/sparse": ("read:ratings",),
    "sync": ("read:sync",),
    "components": ("read:components",),
    "eyetracking": ("read:events",),
    "participants": ("read:participants", "read:events"),
    "rooms": ("read:events",),
}
_SERVER_ERRORS = {
    500: ("INTERNAL_SERVER_ERROR", "Internal server error"),
    502: ("BAD_GATEWAY", "Bad gateway"),
    503: ("SERVICE_UNAVAILABLE", "Service temporarily unavailable"),
    504: ("GATEWAY_TIMEOUT", "upstream timeout"),
}
_JSON = "application/json"
_FORMATS = {"json": _JSON, "ndjson": "application/x-ndjson", "csv": "text/csv"}
_ECHOED = (
    "startTime",
    "endTime",
    "category",
    "componentType",
    "deploymentId",
    "roomId",
    "aggregationWindow",
    "limit",
    "offset",
    "sort",
    "order",
)


@dataclass
class Reply:
    """A complete API response before faults mangle it."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    records: int = 0
    """Records served: the server's time for the page grows with them (`record_us`)."""


@dataclass(frozen=True)
class Route:
    template: str
    scopes: tuple[str, ...] | None
    handler: Callable[[Simulator, web.Request, tuple[str, ...], bool], Reply]
    args: tuple[str, ...] = ()


class Simulator:
    """The state of one running server: dataset, keys, limits, faults, counters and cache."""

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        origin: str,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.config = config
        self.dataset = Dataset(config, origin=origin)
        self.api_key = config.api_key or api_key_for_seed(config.seed)
        self.faults = config.faults
        self.stats = Stats()
        self.cache = PageCache(config.cache_mb * 2**20)
        self.clock = clock
        self.sleep = sleep
        self.limiter: RateLimiter | None = None
        if config.rate_limit != "off":
            scale = 1.0 if config.rate_limit == "production" else float(config.rate_limit)
            self.limiter = RateLimiter(scale, config.rate_window == "sliding", clock)
        self._attempts: Counter[str] = Counter()
        self._bursts: Counter[str] = Counter()
        self._retry_until: dict[str, float] = {}
        self._retry_from: dict[str, float] = {}

    def set_faults(self, spec: FaultSpec) -> None:
        self.faults = spec

    def mutate(
        self,
        experiment_id: str,
        data_type: str,
        *,
        append: int = 0,
        insert: int = 0,
        room_id: str | None = None,
    ) -> list[Record]:
        """Dataset.mutate at the clock's now; cached pages are dropped so none is served stale."""
        try:
            return self.dataset.mutate(
                experiment_id,
                data_type,
                append=append,
                insert=insert,
                now_ms=_now_ms(self),
                room_id=room_id,
            )
        finally:  # also after a failure part-way, which may have added some records
            self.cache.clear()

    def reset(self) -> None:
        """Zero counters, rate-limit windows, bursts and fault attempt numbers. Mutations stay:
        they are data, and a test resets counters between phases of one live experiment."""
        self.stats.reset()
        if self.limiter is not None:
            self.limiter.reset()
        self._attempts.clear()
        self._bursts.clear()
        self._retry_until.clear()
        self._retry_from.clear()

    def attempt(self, key: str) -> int:
        """0 for the first time this exact request is seen, then 1, 2, ..."""
        n = self._attempts[key]
        self._attempts[key] = n + 1
        return n

    def admit(self, api_key: str, template: str) -> Decision | None:
        """Bursts and rate limits; raises RateLimited. None when limits are off."""
        now = self.clock()
        if self._retry_from.get(api_key, 0.0) <= now < self._retry_until.get(api_key, 0.0):
            self.stats.during_retry_after += 1
        if self._bursts[api_key] > 0:
            self._bursts[api_key] -= 1
            self.reject(api_key, self.faults.retry_after)
        if self.limiter is None:
            return None
        decision = self.limiter.check(api_key, template)
        if not decision.allowed:
            self.reject(api_key, decision.retry_after, decision)
        return decision

    def reject(self, api_key: str, retry_after: int, decision: Decision | None = None) -> None:
        """Answer 429. Arrivals from the key count as `during_retry_after` from a short grace
        after the first 429 of an episode (requests already in flight cannot obey it) until the
        latest Retry-After given has passed."""
        self.stats.rate_limited += 1
        now = self.clock()
        until = self._retry_until.get(api_key, 0.0)
        if now >= until:
            self._retry_from[api_key] = now + IN_FLIGHT_GRACE_S
        self._retry_until[api_key] = max(until, now + retry_after)
        raise RateLimited(retry_after, _limit_headers(decision))

    def start_burst(self, api_key: str) -> None:
        """This request and the next burst-1 requests of the key get 429."""
        self._bursts[api_key] = max(0, self.faults.burst - 1)
        self.reject(api_key, self.faults.retry_after)


# -- parameters ---------------------------------------------------------------------------------


def _int_param(request: web.Request, name: str, default: int, minimum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(name, raw, f"integer >= {minimum}") from None
    if value < minimum:
        raise InvalidParameter(name, raw, f"integer >= {minimum}")
    return value


def _limit_param(sim: Simulator, request: web.Request) -> int:
    """The page size served: `limit` capped at max_page_size, or refused above it."""
    limit = _int_param(request, "limit", 1000, 1)
    maximum = sim.config.max_page_size
    if limit > maximum and sim.config.oversize_limit == "reject":
        raise InvalidParameter("limit", limit, f"integer between 1 and {maximum}", max=maximum)
    if limit > maximum and sim.config.oversize_limit == "timeout":
        raise GatewayTimeout()
    return min(limit, maximum)


def _choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = request.query.get(name, default)
    if value not in choices:
        raise InvalidParameter(name, value, " or ".join(choices))
    return value


def _query_echo(request: web.Request) -> dict[str, Any]:
    echo: dict[str, Any] = {}
    for name in _ECHOED:
        raw = request.query.get(name)
        echo[name] = int(raw) if raw is not None and name in ("limit", "offset") else raw
    return echo


# -- handlers -----------------------------------------------------------------------------------


def health(sim: Simulator, request: web.Request, args: tuple[str, ...], short: bool) -> Reply:
    body = {"status": "healthy", "version": envelope.VERSION, "timestamp": iso_ms(_now_ms(sim))}
    return Reply(200, envelope.encode(body))


def list_experiments(
    sim: Simulator, request: web.Request, args: tuple[str, ...], short: bool
) -> Reply:
    limit = _limit_param(sim, request)
    offset = _int_param(request, "offset", 0, 0)
    search = request.query.get("search", "").casefold()
    rows = [r for r in sim.dataset.experiments() if search in r["name"].casefold()]
    page = rows[offset : offset + limit]
    meta = {
        "dataType": "experiments",
        "scope": "user",
        "timestamp": iso_ms(_now_ms(sim)),
        "query": {"search": search or None, "limit": limit, "offset": offset},
        "pagination": envelope.pagination(len(rows), len(page), limit, offset),
    }
    return Reply(200, envelope.success(envelope.encode(page), meta))


def get_experiment(
    sim: Simulator, request: web.Request, args: tuple[str, ...], short: bool
) -> Reply:
    ds = sim.dataset
    row = ds.experiment_row(ds.experiment(args[0]), detail=True)
    meta = {"dataType": "experiment", "timestamp": iso_ms(_now_ms(sim))}
    return Reply(200, envelope.success(envelope.encode([row]), meta))


def download_url(sim: Simulator, request: web.Request, args: tuple[str, ...], short: bool) -> Reply:
    room_id, recording_id = args
    fmt = sim.dataset.media_format(room_id, recording_id)
    now = sim.clock()
    expires = int(now + sim.config.media_url_ttl_s)
    key = request_key("MINT", request.raw_path, [])
    if sim.faults.draw(MINT_KINDS, sim.config.seed, key, sim.attempt(key)):
        sim.stats.fault("media-expire")
        expires = int(now) - 1
    url = sim.dataset.origin + sim.dataset.signer.path(room_id, recording_id, fmt, expires)
    return Reply(200, envelope.encode({"status": "success", "data": {"url": url}}))


def data_page(sim: Simulator, request: web.Request, args: tuple[str, ...], short: bool) -> Reply:
    """GET /data/{type}/{scope}/{id}: one page in json, ndjson or csv."""
    data_type, scope, scope_id = args
    q = request.query
    limit = _limit_param(sim, request)
    offset = _int_param(request, "offset", 0, 0)
    order = _choice(request, "order", ("asc", "desc"), "asc")
    fmt = _choice(request, "format", tuple(_FORMATS), "json")
    room_id = q.get("roomId")
    start, end = q.get("startTime"), q.get("endTime")
    deployment = q.get("deploymentId") if scope == "experiment" else None
    ds = sim.dataset
    span = ds.span(data_type, scope, scope_id, room_id, start, end, deployment_id=deployment)
    total = len(span)
    rows_wanted = max(1, limit // 2) if short else limit
    sort = q.get("sort")
    # Keyed on the matched span, not the filters' text: crawls with different snapshot times
    # over the same records share pages.
    key = (fmt, order, sort, offset, rows_wanted, *args, room_id, span.start, span.stop, deployment)
    cached = sim.cache.get(key)
    if cached is None:
        rows = ds.records(
            data_type,
            scope,
            scope_id,
            room_id,
            offset=offset,
            limit=rows_wanted,
            start_time=start,
            end_time=end,
            order=order,
            sort=sort,
            deployment_id=deployment,
        )
        encoder = {"json": envelope.encode, "ndjson": envelope.ndjson, "csv": envelope.to_csv}
        cached = (encoder[fmt](rows), len(rows))
        sim.cache.put(key, *cached)
    body, returned = cached
    pagination = envelope.pagination(total, returned, limit, offset)
    if fmt != "json":
        headers = envelope.pagination_headers(pagination)
        return Reply(200, body, _FORMATS[fmt] + "; charset=utf-8", headers, returned)
    if sim.config.bare_pagination:
        pagination = {k: pagination[k] for k in ("total", "offset", "hasMore")}
    processing: dict[str, Any] = {}
    if scope != "experiment":
        processing["experimentStartedAt"] = ds.room(room_id or scope_id).started_iso
    processing |= {
        "processingTimeMs": 3 + len(body) // 100_000,
        "enriched": data_type == "events",
        "version": envelope.VERSION,
    }
    meta: dict[str, Any] = {"dataType": data_type}
    if data_type.startswith("ratings/"):
        meta["ratingType"] = data_type.removeprefix("ratings/")
    meta |= {
        "scope": scope,
        "scopeId": scope_id,
        "timestamp": iso_ms(_now_ms(sim)),
        "query": _query_echo(request),
        "processing": processing,
        "pagination": pagination,
    }
    warnings = ds.warnings(data_type, scope)
    if warnings:
        meta["_warnings"] = warnings
    return Reply(200, envelope.success(body, meta), records=returned)


def _now_ms(sim: Simulator) -> int:
    return int(sim.clock() * 1000)


# -- routing ------------------------------------------------------------------------------------


def match_api(segments: list[str]) -> Route:
    """Route an already-unquoted /api/v3 path; raises NotFound for unknown routes."""
    match segments:
        case ["health"]:
            return Route("GET /health", None, health)
        case ["experiments"]:
            return Route("GET /experiments", ("read:experiments",), list_experiments)
        case ["experiments", exp_id]:
            return Route("GET /experiments/{id}", ("read:experiments",), get_experiment, (exp_id,))
        case ["data", "recordings", "download", room_id, recording_id]:
            return Route(
                "GET /data/recordings/download/{roomId}/{recordingId}",
                ("read:recordings",),
                download_url,
                (room_id, recording_id),
            )
        case ["data", "ratings", kind, scope, scope_id] | ["data", kind, scope, scope_id]:
            data_type = kind if len(segments) == 4 else f"ratings/{kind}"
            if data_type in DATA_TYPES and scope in ("experiment", "room", "participant"):
                return Route(
                    f"GET /data/{data_type}/{scope}/{{id}}",
                    _REQUIRED_SCOPES[data_type],
                    data_page,
                    (data_type, scope, scope_id),
                )
    raise NotFound("Route not found")


def _has_scope(granted: frozenset[str], required: tuple[str, ...]) -> bool:
    if "*" in granted:
        return True
    return any(r in granted or (r.startswith("read:") and "read:*" in granted) for r in required)


def _segments(raw: str, prefix: str) -> list[str]:
    return [unquote(s) for s in raw[len(prefix) :].split("/")]


def _reply_response(reply: Reply, extra: dict[str, str]) -> web.Response:
    return web.Response(
        status=reply.status,
        body=reply.body,
        headers={"Content-Type": reply.content_type, **reply.headers, **extra},
    )


def _limit_headers(decision: Decision | None) -> dict[str, str]:
    if decision is None:
        return {}
    reset = decision.reset
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(int(reset)) if reset == int(reset) else f"{reset:.3f}",
    }


def _fault_reply(kind: str) -> Reply:
    status = int(kind[:3])
    if kind.endswith("-html"):
        reason = _SERVER_ERRORS[status][1]
        return Reply(status, envelope.html_error(status, reason), "text/html; charset=utf-8")
    code, message = _SERVER_ERRORS[status]
    return Reply(
        status, envelope.encode({"status": "error", "error": {"code": code, "message": message}})
    )


async def _send_truncated(
    request: web.Request, body: bytes, headers: dict[str, str]
) -> web.StreamResponse:
    """Declare the full length, send part of it, then drop the connection."""
    response = web.StreamResponse(status=200, headers=headers)
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    _drop(request)
    return response


def _reset(request: web.Request) -> web.Response:
    """Close the connection without answering; the returned response is never sent."""
    _drop(request)
    return web.Response(status=599)


def _carries_key(request: web.Request, api_key: str) -> bool:
    """Whether a request shows the API key in any header (a signed URL needs none)."""
    return any(api_key in value for value in request.headers.values())


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


class Dispatcher:
    """One aiohttp handler for every API and media request (raw-path routing)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        capacity = sim.config.capacity
        self._capacity = asyncio.Semaphore(capacity) if capacity else None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.partition("?")[0]
        if raw.startswith("/media/"):
            return await self.media(request, _segments(raw, "/media/"))
        template = "GET <unmatched>"
        status: int | str = 500
        try:
            try:
                if not raw.startswith(API_PREFIX):
                    raise NotFound("Route not found")
                route = match_api(_segments(raw, API_PREFIX))
                template = route.template
                response = await self.api(request, route, raw)
            except ApiError as exc:
                response = self.error_response(exc)
            status = "reset" if response.status == 599 else response.status
            return response
        finally:
            self.sim.stats.record(template, status)

    def error_response(self, exc: ApiError, extra: dict[str, str] | None = None) -> web.Response:
        headers = dict(extra or {})
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
            headers |= exc.headers
        return _reply_response(Reply(exc.status, envelope.error(exc)), headers)

    async def api(self, request: web.Request, route: Route, raw: str) -> web.StreamResponse:
        sim = self.sim
        if route.scopes is None:
            return _reply_response(route.handler(sim, request, route.args, False), {})
        key = request_key("GET", raw, list(request.query.items()))
        attempt = sim.attempt(key)
        await self.latency(key, attempt)
        api_key = request.headers.get("X-API-Key")
        if api_key != sim.api_key:
            raise Unauthenticated()
        if not _has_scope(sim.config.scopes, route.scopes):
            raise Forbidden(route.scopes[0], sorted(sim.config.scopes))
        decision = sim.admit(api_key, route.template)
        extra = _limit_headers(decision)
        fault = sim.faults.draw(API_KINDS, sim.config.seed, key, attempt)
        if fault is not None:
            sim.stats.fault(fault)
        if fault == "429-burst":
            sim.start_burst(api_key)
        if fault in ("slow", "spike"):
            await sim.sleep(sim.faults.slow_s if fault == "slow" else sim.faults.spike_ms / 1000)
        if fault == "reset":
            return _reset(request)
        if fault is not None and fault[0] == "5":
            return _reply_response(_fault_reply(fault), extra)
        try:
            reply = route.handler(sim, request, route.args, fault == "short-page")
        except ApiError as exc:
            return self.error_response(exc, extra)
        await self.server_time(reply.records)
        if fault == "badjson":
            reply.body = reply.body[: len(reply.body) // 2] + b"\n<!-- upstream cut -->"
        if fault == "truncate":
            headers = {"Content-Type": reply.content_type, **reply.headers, **extra}
            return await _send_truncated(request, reply.body, headers)
        return _reply_response(reply, extra)

    async def server_time(self, records: int) -> None:
        """`record_us` per record served, `capacity` pages at a time (the rest queue)."""
        seconds = records * self.sim.config.record_us / 1e6
        if seconds <= 0:
            return
        if self._capacity is None:
            await self.sim.sleep(seconds)
            return
        async with self._capacity:
            await self.sim.sleep(seconds)

    async def latency(self, key: str, attempt: int) -> None:
        cfg = self.sim.config
        jitter = cfg.jitter_ms * unit(hash_ints(cfg.seed, 7, hash_text(key), attempt))
        delay = (cfg.latency_ms + jitter) / 1000
        if delay > 0:
            await self.sim.sleep(delay)

    async def media(self, request: web.Request, segments: list[str]) -> web.StreamResponse:
        """A signed recording URL: no API key; Range support; streamed in 64 KiB chunks."""
        sim = self.sim
        template = "GET /media/{roomId}/{recordingId}"
        if _carries_key(request, sim.api_key):
            sim.stats.media_requests_with_api_key += 1
        if len(segments) != 2 or "." not in segments[1]:
            sim.stats.record(template, 404)
            return web.Response(status=404, text="Not Found")
        room_id, (recording_id, fmt) = segments[0], segments[1].rsplit(".", 1)
        try:
            expires = int(request.query.get("expires", ""))
        except ValueError:
            expires = -1
        sig = request.query.get("sig", "")
        if not sim.dataset.signer.valid(room_id, recording_id, fmt, expires, sig):
            return self.media_denied(template, "SignatureDoesNotMatch")
        if sim.clock() > expires:
            return self.media_denied(template, "ExpiredToken")
        key = request_key("GET", request.raw_path.partition("?")[0], list(request.query.items()))
        key += "|" + request.headers.get("Range", "")
        attempt = sim.attempt(key)
        await self.latency(key, attempt)
        fault = sim.faults.draw(MEDIA_KINDS, sim.config.seed, key, attempt)
        if fault is not None:
            sim.stats.fault(fault)
        if fault == "media-reset":
            sim.stats.record(template, "reset")
            return _reset(request)
        size = sim.dataset.media_size(room_id, recording_id)
        wanted = None if fault == "media-norange" else request.headers.get("Range")
        span = media.parse_range(wanted, size)
        if span is False:
            sim.stats.record(template, 416)
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        start, end = span or (0, size)
        response = web.StreamResponse(status=206 if span else 200)
        response.content_type = "video/" + fmt
        response.content_length = end - start
        response.headers["Accept-Ranges"] = "bytes"
        if span:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        sim.stats.record(template, response.status)
        await response.prepare(request)
        stop = start + (end - start) // 2 if fault == "media-truncate" else end
        pattern = sim.dataset.media_pattern(room_id, recording_id)
        for chunk in media.chunks(pattern, start, stop):
            await response.write(chunk)
            sim.stats.media_bytes_served += len(chunk)
            if sim.config.media_mbps:
                await sim.sleep(len(chunk) / (sim.config.media_mbps * 1e6))
        if stop < end:
            _drop(request)
            return response
        await response.write_eof()
        return response

    def media_denied(self, template: str, code: str) -> web.Response:
        self.sim.stats.record(template, 403)
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code></Error>"
        return web.Response(status=403, text=body, content_type="application/xml")


# -- admin --------------------------------------------------------------------------------------


def build_app(sim: Simulator) -> web.Application:
    """Admin routes first, then one catch-all that routes on the raw path."""

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(sim.stats.snapshot())

    async def reset(request: web.Request) -> web.Response:
        sim.reset()
        return web.json_response({"status": "ok"})

    async def faults(request: web.Request) -> web.Response:
        try:
            spec = FaultSpec.parse(await request.text())
        except ValueError as exc:
            return web.json_response({"status": "error", "message": str(exc)}, status=400)
        sim.set_faults(spec)
        return web.json_response({"status": "ok", "faults": str(spec)})

    async def mutate(request: web.Request) -> web.Response:
        """{"experimentId", "dataType", "append"?, "insert"?, "roomId"?} -> {"added": [...]}."""
        try:
            body = await request.json()
            added = sim.mutate(
                body["experimentId"],
                body["dataType"],
                append=body.get("append", 0),
                insert=body.get("insert", 0),
                room_id=body.get("roomId"),
            )
        except ApiError as exc:
            return web.Response(status=exc.status, body=envelope.error(exc), content_type=_JSON)
        except (ValueError, KeyError, TypeError) as exc:
            message = f"bad mutation body: {exc!r}"
            return web.json_response({"status": "error", "message": message}, status=400)
        return web.Response(body=envelope.encode({"added": added}), content_type=_JSON)

    app = web.Application()
    app.router.add_get("/_sim/stats", stats)
    app.router.add_post("/_sim/reset", reset)
    app.router.add_post("/_sim/faults", faults)
    app.router.add_post("/_sim/mutate", mutate)
    # [\s\S]* rather than .*: decoded ids may contain newlines.
    app.router.add_get(r"/{tail:[\s\S]*}", Dispatcher(sim).handle)
    return app
