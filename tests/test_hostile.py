"""Everything the server sends is untrusted: hostile ids never escape --out nor collide, and
responses that break the contract end their stream with a clear error, never a wrong archive."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
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
    events: list[dict[str, object]] | None = None, *, redirect: bool = False
) -> AsyncIterator[tuple[str, list[tuple[str, str | None]]]]:
    """A loopback server that breaks the contract: the events pages are `events`, answered in
    order; every other data type is empty; `redirect` sends every request elsewhere. Yields
    the base URL and the (path, X-API-Key) of every request it received."""
    seen: list[tuple[str, str | None]] = []
    pages = list(events or [])

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, request.headers.get("X-API-Key")))
        if redirect:
            raise web.HTTPFound("http://127.0.0.2:9/steal")
        body = pages.pop(0) if "/data/events/" in request.path and pages else EMPTY
        return web.json_response(body)

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
