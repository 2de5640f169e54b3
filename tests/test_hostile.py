"""Everything the server sends is untrusted: hostile ids never escape --out nor collide, and
responses that break the contract end their stream with a clear error, never a wrong archive."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from conftest import (
    DATA_TYPE_PATHS,
    archive_folder,
    expected_type,
    read_type,
    settings_for,
)

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.config import Settings, load_settings
from hyperstudy_bulk.datatypes import data_type_named
from hyperstudy_bulk.errors import TlsError
from hyperstudy_bulk.simulator import SimulatorConfig, serve
from hyperstudy_bulk.sinks import safe_name

HOSTILE = SimulatorConfig(seed=1, rooms=8, participants=2, records=40, hostile_ids=True)
KEY = "hst_test_UntrustedServerSecret42"


@pytest.mark.parametrize("granularity", ["room", "participant"])
async def test_hostile_ids_stay_inside_out_and_map_back(tmp_path: Path, granularity: str) -> None:
    out = tmp_path / "out"
    async with serve(HOSTILE) as sim:
        exp = sim.experiment_ids[0]
        async with Downloader(settings_for(sim, out, granularity=granularity, media=False)) as dl:
            manifest = await dl.archive(exp)
        assert manifest.complete, [s.error for s in manifest.incomplete_streams]
        folder = archive_folder(out, exp)
        for path in DATA_TYPE_PATHS:
            got = sorted(map(repr, read_type(folder, data_type_named(path).folder)))
            assert got == sorted(map(repr, expected_type(sim, path, exp))), path
    written = [p for p in tmp_path.rglob("*") if p.is_file()]  # noqa: ASYNC240
    assert all(p.resolve().is_relative_to(folder.resolve()) for p in written)
    paths = [f.path for s in manifest.streams for f in s.files]
    assert len(paths) == len(set(paths)) == len({p.casefold() for p in paths})
    for stream in manifest.streams:
        if stream.scope == "room":  # the manifest maps each file back to its (hostile) id
            assert stream.stem.startswith(f"{stream.data_type}/room-{safe_name(stream.scope_id)}")
            assert all(f.path.startswith(stream.stem) for f in stream.files)
    assert main(["verify", str(folder)]) == 0


def _page(data: object, **pagination: object) -> dict[str, object]:
    meta = {"total": 2, "returned": 2, "hasMore": False, "limit": 1000, "offset": 0}
    meta.update(pagination)
    return {"status": "success", "data": data, "metadata": {"pagination": meta}}


EMPTY = _page([], total=0, returned=0)


@asynccontextmanager
async def rogue_server(
    events: list[dict[str, object] | web.Response] | None = None, *, redirect: bool = False
) -> AsyncIterator[tuple[str, list[tuple[str, str | None]]]]:
    """A loopback server that breaks the contract: the events pages are `events` (bodies, or
    whole responses with their status and headers), answered in order; every other data type
    is empty; `redirect` sends every request elsewhere. Yields the base URL and the (path,
    X-API-Key) of every request it received."""
    seen: list[tuple[str, str | None]] = []
    pages = list(events or [])

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, request.headers.get("X-API-Key")))
        if redirect:
            raise web.HTTPFound("http://127.0.0.2:9/steal")
        body = pages.pop(0) if "/data/events/" in request.path and pages else EMPTY
        return body if isinstance(body, web.Response) else web.json_response(body)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/api/v3", seen
    finally:
        await runner.cleanup()


def settings_for_base(base: str, out: Path, **options: object) -> Settings:
    return load_settings(
        {
            "api_key": KEY,
            "base_url": base,
            "out": str(out),
            "retry_backoff": 0.01,
            "retry_backoff_max": 0.02,
            "media": False,
            **options,
        },
        environ={},
        cwd=out,
    )


@pytest.mark.parametrize(
    ("pages", "message"),
    [
        ([_page({"id": "a"})], "no 'data' list"),
        ([_page([1, 2])], "something other than JSON objects"),
        ([_page([{"id": "a"}], total=-5, returned=1)], "pagination.total is -5, not a count"),
        (
            [{"status": "success", "data": [], "metadata": {"pagination": {"hasMore": False}}}],
            "pagination.total is missing",
        ),
        (
            [_page([{"id": "a"}], total=9, returned=1, hasMore=True, nextOffset=0)],
            "nextOffset 0 does not move past offset 0",
        ),
        (
            [_page([{"id": "a"}], total=3, returned=1, hasMore=True, nextOffset=5)],
            "is not below its total 3",
        ),
    ],
)
async def test_contract_breaking_responses_end_the_stream_with_a_clear_error(
    tmp_path: Path, pages: list[dict[str, object]], message: str
) -> None:
    async with rogue_server(pages) as (base, _):
        settings = settings_for_base(base, tmp_path, data_types="events,chat,rooms")
        async with Downloader(settings) as downloader:
            manifest = await downloader.archive("exp1")
    assert not manifest.complete
    events = next(s for s in manifest.streams if s.data_type == "events")
    assert events.status == "incomplete"
    assert message in (events.error or "")
    assert events.files == []
    assert not list((tmp_path / "exp1" / "events").glob("*.ndjson"))
    assert all(s.status == "complete" for s in manifest.streams if s.data_type != "events")


@pytest.mark.parametrize(
    ("retry_after", "reason"),
    [
        ("86400", "waiting 86400 s (its Retry-After)"),
        ("inf", "waiting 60 s (a 429 without Retry-After)"),
        ("nan", "waiting 60 s (a 429 without Retry-After)"),
        ("1e999", "waiting 60 s (a 429 without Retry-After)"),
        ("-5", "waiting 60 s (a 429 without Retry-After)"),
    ],
)
async def test_a_wait_beyond_the_retry_budget_ends_the_request_at_once(
    tmp_path: Path, retry_after: str, reason: str
) -> None:
    """A Retry-After longer than --max-retry-seconds is not obeyed (nor are values that are
    not finite numbers: then the customary 60 s after a 429 applies, and does not fit either):
    the request ends with an error saying so, and no other stream is paused."""
    refusal = web.json_response(
        {"error": {"code": "RATE_LIMITED", "message": "slow down"}},
        status=429,
        headers={"Retry-After": retry_after},
    )
    async with rogue_server([refusal]) as (base, seen):
        settings = settings_for_base(
            base, tmp_path, data_types="events,chat,rooms", max_retry_seconds=20
        )
        async with Downloader(settings) as downloader, asyncio.timeout(60):  # a hang guard
            manifest = await downloader.archive("exp1")
            paused = downloader.api.budget.counters.paused_seconds
    events = next(s for s in manifest.streams if s.data_type == "events")
    assert events.status == "incomplete"
    assert f"HTTP 429 RATE_LIMITED: slow down; retrying means {reason}" in (events.error or "")
    assert "s left of --max-retry-seconds 20: run the same command again later" in (
        events.error or ""
    )
    assert [path for path, _ in seen if "/data/events/" in path] == [
        "/api/v3/data/events/experiment/exp1"
    ]
    assert paused == 0
    assert all(s.status == "complete" for s in manifest.streams if s.data_type != "events")


@pytest.mark.parametrize(
    ("remaining", "reset"),
    [("1e999", "10"), ("inf", "10"), ("nan", "10"), ("-1", "10"), ("0", "inf"), ("0", "600")],
)
async def test_absurd_or_unaffordable_rate_limit_headers_are_not_obeyed(
    tmp_path: Path, remaining: str, reset: str
) -> None:
    """X-RateLimit-Remaining/Reset that are not finite numbers are ignored; a reset further
    away than --max-retry-seconds is not waited for (a 429, if it comes, says how long)."""
    records = [{"id": "a"}, {"id": "b"}]
    page = web.json_response(
        _page(records),
        headers={"X-RateLimit-Remaining": remaining, "X-RateLimit-Reset": reset},
    )
    async with rogue_server([page]) as (base, _):
        settings = settings_for_base(base, tmp_path, data_types="events", max_retry_seconds=20)
        async with Downloader(settings) as downloader, asyncio.timeout(60):  # a hang guard
            manifest = await downloader.archive("exp1")
            paused = downloader.api.budget.counters.paused_seconds
    assert manifest.complete, [s.error for s in manifest.incomplete_streams]
    assert read_type(tmp_path / "exp1", "events") == records
    assert paused == 0


def _echo_warning() -> dict[str, object]:
    return {
        "status": "success",
        "data": [{"id": "a"}],
        "metadata": {
            "pagination": {"total": 1, "offset": 0, "hasMore": False},
            "_warnings": [f"debug: called with key {KEY}"],
        },
    }


@pytest.mark.parametrize(
    "echo",
    [
        lambda: _page([], total=f"n/a for {KEY}", returned=0),
        lambda: _page([{"id": "a"}], returned=f"1 for {KEY}"),
        _echo_warning,
        lambda: web.json_response(
            {"error": {"code": "BAD", "message": f"bad key {KEY}", "details": KEY}}, status=400
        ),
        lambda: web.json_response({"error": f"upstream said {KEY}"}, status=503),
    ],
    ids=["total", "returned", "warnings", "error-body", "error-string"],
)
async def test_the_key_a_server_echoes_back_is_redacted_everywhere(
    tmp_path: Path, echo: Callable[[], dict[str, object] | web.Response]
) -> None:
    """A gateway reflecting the caller's key into what it sends: the key is cut out of every
    message, log line and manifest field that quotes the server."""
    log: list[str] = []
    async with rogue_server([echo() for _ in range(3)]) as (base, _):
        settings = settings_for_base(base, tmp_path, data_types="events,rooms", max_attempts=2)
        async with Downloader(settings, log=log.append) as downloader:
            manifest = await downloader.archive("exp1")
    stored = (tmp_path / "exp1" / "manifest.json").read_text()
    assert "<redacted>" in stored
    assert KEY not in stored
    assert KEY not in "\n".join(log)
    assert KEY not in repr(manifest)
    assert all(KEY not in path.read_text() for path in (tmp_path / "exp1").rglob("*.json"))


async def test_the_key_is_not_sent_across_a_redirect(tmp_path: Path) -> None:
    async with rogue_server(redirect=True) as (base, seen):
        settings = settings_for_base(base, tmp_path, data_types="rooms")
        async with Downloader(settings) as downloader:
            manifest = await downloader.archive("exp1")
    assert not manifest.complete
    assert "HTTP 302" in (manifest.streams[0].error or "")
    assert seen == [("/api/v3/data/rooms/experiment/exp1", KEY)]


async def test_a_certificate_that_cannot_be_verified_ends_the_run(tmp_path: Path) -> None:
    """TLS verification is never switched off: a self-signed server is refused at once."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    await asyncio.to_thread(
        subprocess.run,
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    seen: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        return web.json_response(EMPTY)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    base = f"https://127.0.0.1:{runner.addresses[0][1]}/api/v3"
    try:
        settings = settings_for_base(base, tmp_path / "out", data_types="rooms")
        async with Downloader(settings) as downloader:
            with pytest.raises(TlsError, match="could not be verified"):
                await downloader.archive("exp1")
    finally:
        await runner.cleanup()
    assert seen == []
    assert not (tmp_path / "out" / "exp1").exists()
