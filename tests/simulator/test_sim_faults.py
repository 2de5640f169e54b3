"""Faults: the spec grammar, every kind over HTTP, and reproducible draws per attempt."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from hyperstudy_bulk.simulator import FaultSpec, SimulatorConfig, serve
from hyperstudy_bulk.simulator.app import IN_FLIGHT_GRACE_S
from hyperstudy_bulk.simulator.faults import API_KINDS
from hyperstudy_bulk.simulator.server import SimulatorHandle

from .conftest import FakeClock, RecordingSleep


def test_parse_and_canonical_text() -> None:
    spec = FaultSpec.parse("500=0.05, 502-html=0.02,reset=0.01,slow=0.01,slow-s=4,burst=3")
    assert dict(spec.rates) == {"500": 0.05, "502-html": 0.02, "reset": 0.01, "slow": 0.01}
    assert spec.slow_s == 4
    assert spec.burst == 3
    assert FaultSpec.parse(str(spec)) == spec
    assert FaultSpec.parse("") == FaultSpec.none() == FaultSpec.parse("none")


@pytest.mark.parametrize(
    "text", ["500", "500=x", "teapot=0.1", "500=1.5", "500=0.6,503=0.6", "slow-s=-1"]
)
def test_parse_rejects_bad_specs(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        FaultSpec.parse(text)


def test_draws_are_reproducible_and_fresh_per_attempt() -> None:
    spec = FaultSpec.parse("500=0.5")
    first = [spec.draw(API_KINDS, 1, "GET /x", n) for n in range(64)]
    assert first == [spec.draw(API_KINDS, 1, "GET /x", n) for n in range(64)]
    assert set(first) == {"500", None}
    assert first != [spec.draw(API_KINDS, 2, "GET /x", n) for n in range(64)]


async def get(http: aiohttp.ClientSession, url: str, **params: int) -> tuple[int, bytes]:
    async with http.get(url, params=params) as response:
        return response.status, await response.read()


@pytest.mark.parametrize(
    ("kind", "status", "marker"),
    [
        ("500", 500, b'"INTERNAL_SERVER_ERROR"'),
        ("502", 502, b'"BAD_GATEWAY"'),
        ("503", 503, b'"SERVICE_UNAVAILABLE"'),
        ("504", 504, b'"GATEWAY_TIMEOUT"'),
        ("500-html", 500, b"<html>"),
        ("502-html", 502, b"<html>"),
        ("503-html", 503, b"<html>"),
        ("504-html", 504, b"<html>"),
    ],
)
async def test_server_error_faults(
    sim: SimulatorHandle, http: aiohttp.ClientSession, kind: str, status: int, marker: bytes
) -> None:
    sim.set_faults(FaultSpec.parse(f"{kind}=1"))
    got, body = await get(http, f"{sim.base_url}/data/events/experiment/{sim.experiment_ids[0]}")
    assert got == status
    assert marker in body
    assert sim.stats()["faults"] == {kind: 1}


async def test_reset_and_truncate_break_the_connection(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    url = f"{sim.base_url}/data/events/experiment/{sim.experiment_ids[0]}"
    sim.set_faults(FaultSpec.parse("reset=1"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await get(http, url)
    sim.set_faults(FaultSpec.parse("truncate=1"))
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(http, url)
    sim.set_faults(FaultSpec.none())
    assert (await get(http, url))[0] == 200


async def test_badjson_is_200_with_unparseable_body(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    sim.set_faults(FaultSpec.parse("badjson=1"))
    status, body = await get(http, f"{sim.base_url}/data/events/experiment/{sim.experiment_ids[0]}")
    assert status == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)


async def test_burst_rejects_the_next_requests_of_the_key(
    sim: SimulatorHandle, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    url = f"{sim.base_url}/data/chat/experiment/{sim.experiment_ids[0]}"
    sim.set_faults(FaultSpec.parse("429-burst=1,burst=3,retry-after=2"))
    async with http.get(url) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "2"
        assert (await response.json())["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    sim.set_faults(FaultSpec.none())
    assert (await get(http, url))[0] == 429
    assert sim.stats()["during_retry_after"] == 0  # within the grace: may have been in flight
    clock.advance(IN_FLIGHT_GRACE_S)
    assert [(await get(http, url))[0] for _ in range(2)] == [429, 200]
    assert sim.stats()["rate_limited"] == 3
    # Past the grace and before Retry-After has passed: both count as not waiting.
    assert sim.stats()["during_retry_after"] == 2


async def test_slow_and_spike_ask_for_the_configured_delays(
    sim: SimulatorHandle, http: aiohttp.ClientSession, sleeps: RecordingSleep
) -> None:
    url = f"{sim.base_url}/data/events/experiment/{sim.experiment_ids[0]}"
    sim.set_faults(FaultSpec.parse("slow=1,slow-s=45"))
    assert (await get(http, url))[0] == 200
    sim.set_faults(FaultSpec.parse("spike=1,spike-ms=800"))
    assert (await get(http, url))[0] == 200
    assert sleeps.delays == [45.0, 0.8]


async def test_slow_response_outlasts_a_client_timeout() -> None:
    config = SimulatorConfig(records=5, faults=FaultSpec.parse("slow=1,slow-s=5"))
    async with serve(config) as sim:
        timeout = aiohttp.ClientTimeout(total=0.2)
        headers = {"X-API-Key": sim.api_key}
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
            with pytest.raises(TimeoutError):
                await get(http, f"{sim.base_url}/data/events/experiment/{sim.experiment_ids[0]}")


async def test_short_pages_stay_consistent(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    exp = sim.experiment_ids[0]
    url = f"{sim.base_url}/data/events/experiment/{exp}"
    sim.set_faults(FaultSpec.parse("short-page=1"))
    rows, offset = [], 0
    while True:
        async with http.get(url, params={"limit": 40, "offset": offset}) as response:
            body = await response.json()
        pagination = body["metadata"]["pagination"]
        assert pagination["returned"] == len(body["data"]) == min(20, pagination["total"] - offset)
        rows += body["data"]
        if not pagination["hasMore"]:
            break
        assert pagination["nextOffset"] == offset + pagination["returned"]
        offset = pagination["nextOffset"]
    assert rows == sim.dataset.records("events", "experiment", exp)


async def statuses(spec: str, urls: list[str], attempts: int) -> list[int]:
    """Status of each attempt of each url, for a fresh server with the same seed."""
    config = SimulatorConfig(seed=9, records=5, faults=FaultSpec.parse(spec))
    out = []
    async with serve(config) as sim:
        headers = {"X-API-Key": sim.api_key}
        async with aiohttp.ClientSession(headers=headers) as http:
            for url in urls:
                for _ in range(attempts):
                    out.append((await get(http, sim.base_url + url))[0])
    return out


async def test_faults_are_reproducible_and_retries_succeed() -> None:
    ds_ids = SimulatorConfig(seed=9, records=5)
    async with serve(ds_ids) as probe:
        exp = probe.experiment_ids[0]
    urls = [f"/data/{t}/experiment/{exp}" for t in ("events", "chat", "sync", "components")]
    first = await statuses("500=0.3,503=0.2", urls, 10)
    assert first == await statuses("500=0.3,503=0.2", urls, 10)
    assert {500, 503, 200} <= set(first)
    for n in range(len(urls)):
        assert 200 in first[n * 10 : (n + 1) * 10]


async def test_latency_and_jitter_are_applied_per_request(sleeps: RecordingSleep) -> None:
    config = SimulatorConfig(records=5, latency_ms=30, jitter_ms=10)
    async with serve(config, sleep=sleeps) as sim:
        headers = {"X-API-Key": sim.api_key}
        async with aiohttp.ClientSession(headers=headers) as http:
            for offset in range(5):
                url = f"{sim.base_url}/data/events/experiment/{sim.experiment_ids[0]}"
                assert (await get(http, url, offset=offset))[0] == 200
    assert len(sleeps.delays) == 5
    assert all(0.03 <= d <= 0.04 for d in sleeps.delays)
    assert len(set(sleeps.delays)) > 1
