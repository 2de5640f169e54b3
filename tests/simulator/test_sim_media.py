"""Recording media: minted signed URLs, Range requests, expiry and media faults."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from hyperstudy_bulk.simulator import FaultSpec
from hyperstudy_bulk.simulator.server import SimulatorHandle

from .conftest import FakeClock, get_json


async def minted(sim: SimulatorHandle, http: aiohttp.ClientSession) -> tuple[dict[str, Any], str]:
    """A recording row that only has a downloadPath, and the URL its mint route returns."""
    rows = sim.dataset.records("recordings", "experiment", sim.experiment_ids[0])
    rec = next(r for r in rows if r.get("downloadPath"))
    expected_path = (
        f"/data/recordings/download/{quote(rec['roomId'], safe='')}/{rec['recordingId']}"
    )
    assert rec["downloadPath"] == expected_path
    status, body = await get_json(http, sim.base_url + rec["downloadPath"])
    assert status == 200
    return rec, body["data"]["url"]


async def test_full_download_without_api_key(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    rec, url = await minted(sim, http)
    size = sim.dataset.media_size(rec["roomId"], rec["recordingId"])
    async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as response:
        assert response.status == 200
        assert response.content_length == size
        body = await response.read()
    assert body == sim.dataset.media_bytes(rec["roomId"], rec["recordingId"], 0, size)
    assert rec.get("fileSize", size) == size
    assert sim.stats()["media_bytes_served"] == size


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=100-199", 100, 200), ("bytes=1000-", 1000, None), ("bytes=-50", -50, None)],
)
async def test_range_requests_get_206(
    sim: SimulatorHandle, http: aiohttp.ClientSession, header: str, start: int, end: int | None
) -> None:
    rec, url = await minted(sim, http)
    size = sim.dataset.media_size(rec["roomId"], rec["recordingId"])
    first = start if start >= 0 else size + start
    last = size if end is None else end
    async with http.get(url, headers={"Range": header}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes {first}-{last - 1}/{size}"
        assert response.content_length == last - first
        body = await response.read()
    assert body == sim.dataset.media_bytes(rec["roomId"], rec["recordingId"], first, last)


async def test_unsatisfiable_range_is_416(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    rec, url = await minted(sim, http)
    size = sim.dataset.media_size(rec["roomId"], rec["recordingId"])
    async with http.get(url, headers={"Range": f"bytes={size}-"}) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == f"bytes */{size}"


async def test_bad_signature_and_expiry_are_403(
    sim: SimulatorHandle, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    _, url = await minted(sim, http)
    async with http.get(url.replace("sig=", "sig=0")) as response:
        assert response.status == 403
    async with http.get(url) as response:
        assert response.status == 200
    clock.advance(sim.dataset.config.media_url_ttl_s + 1)
    async with http.get(url) as response:
        assert response.status == 403
        assert "ExpiredToken" in await response.text()


async def test_embedded_urls_of_older_rows_work(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    rows = sim.dataset.records("recordings", "experiment", sim.experiment_ids[0])
    rec = next(r for r in rows if "downloadUrl" in r)
    async with http.get(rec["downloadUrl"]) as response:
        body = await response.read()
    size = sim.dataset.media_size(rec["roomId"], rec["recordingId"])
    assert body == sim.dataset.media_bytes(rec["roomId"], rec["recordingId"], 0, size)


async def test_unknown_recording_is_404(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    room = sim.dataset.rooms(sim.experiment_ids[0])[0]["id"]
    status, body = await get_json(http, f"{sim.base_url}/data/recordings/download/{room}/nope")
    assert status == 404
    assert body["error"]["code"] == "NOT_FOUND"


async def test_media_faults(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    rec, url = await minted(sim, http)
    size = sim.dataset.media_size(rec["roomId"], rec["recordingId"])
    sim.set_faults(FaultSpec.parse("media-norange=1"))
    async with http.get(url, headers={"Range": "bytes=10-19"}) as response:
        assert response.status == 200
        assert len(await response.read()) == size
    sim.set_faults(FaultSpec.parse("media-truncate=1"))
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(url) as response:
            await response.read()
    sim.set_faults(FaultSpec.parse("media-reset=1"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.get(url) as response:
            await response.read()
    sim.set_faults(FaultSpec.parse("media-expire=1"))
    _, expired = await minted(sim, http)
    async with http.get(expired) as response:
        assert response.status == 403
    faults = sim.stats()["faults"]
    # aiohttp retries a request once when a reused connection drops, hence possibly 2 resets.
    assert set(faults) == {"media-norange", "media-truncate", "media-reset", "media-expire"}
    assert faults["media-expire"] == 1
