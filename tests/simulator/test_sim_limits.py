"""Rate limits with a fake clock: 100/minute/endpoint and 1000/hour/key, fixed and sliding."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from hyperstudy_bulk.simulator import SimulatorConfig, serve
from hyperstudy_bulk.simulator.app import IN_FLIGHT_GRACE_S
from hyperstudy_bulk.simulator.limits import RateLimiter
from hyperstudy_bulk.simulator.server import SimulatorHandle

from .conftest import FakeClock


@pytest.fixture(params=["fixed", "sliding"])
async def limited(
    request: pytest.FixtureRequest, clock: FakeClock
) -> AsyncIterator[tuple[SimulatorHandle, aiohttp.ClientSession, str]]:
    config = SimulatorConfig(records=5, rate_limit="production", rate_window=request.param)
    async with (
        serve(config, clock=clock) as sim,
        aiohttp.ClientSession(headers={"X-API-Key": sim.api_key}) as http,
    ):
        yield sim, http, request.param


async def hit(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    async with http.get(url) as response:
        await response.read()
        return response


async def test_minute_limit_per_endpoint(
    limited: tuple[SimulatorHandle, aiohttp.ClientSession, str], clock: FakeClock
) -> None:
    sim, http, _ = limited
    exp = sim.experiment_ids[0]
    clock.now = 1_800_000_000.0  # a minute boundary, so the fixed window is fresh
    events = f"{sim.base_url}/data/events/experiment/{exp}"
    for n in range(100):
        response = await hit(http, events)
        assert response.status == 200
        assert response.headers["X-RateLimit-Remaining"] == str(99 - n)
        assert response.headers["X-RateLimit-Limit"] == "100"
        clock.advance(0.125)
    rejected = await hit(http, events)
    assert rejected.status == 429
    body_retry = int(rejected.headers["Retry-After"])
    # 12.5 s have passed: the fixed window ends at +60 s; in the sliding one the first hit
    # (at +0 s) leaves at +60 s. Either way 47.5 s remain, rounded up.
    assert body_retry == 48
    assert rejected.headers["X-RateLimit-Remaining"] == "0"
    clock.advance(IN_FLIGHT_GRACE_S)  # past what may have been in flight
    # Another endpoint still has its own quota.
    assert (await hit(http, f"{sim.base_url}/data/chat/experiment/{exp}")).status == 200
    # Waiting inside the Retry-After is counted, and rejected requests consume nothing.
    assert (await hit(http, events)).status == 429
    stats = sim.stats()
    assert stats["rate_limited"] == 2
    assert stats["during_retry_after"] == 2  # per key: the chat request counts too
    clock.advance(body_retry)
    assert (await hit(http, events)).status == 200


async def test_sliding_window_frees_one_slot_at_a_time(clock: FakeClock) -> None:
    limiter = RateLimiter(1.0, True, clock)
    clock.now = 1000.0
    for _ in range(100):
        assert limiter.check("k", "GET /x").allowed
        clock.advance(0.5)
    clock.now = 1059.9
    denied = limiter.check("k", "GET /x")
    assert not denied.allowed
    assert denied.retry_after == 1
    clock.now = 1060.0  # the first hit leaves the trailing 60 s window
    assert limiter.check("k", "GET /x").allowed
    assert not limiter.check("k", "GET /x").allowed


async def test_fixed_window_resets_at_the_boundary(clock: FakeClock) -> None:
    limiter = RateLimiter(1.0, False, clock)
    clock.now = 1_800_000_030.0
    for _ in range(100):
        assert limiter.check("k", "GET /x").allowed
    denied = limiter.check("k", "GET /x")
    assert denied.retry_after == 30
    assert denied.reset == 1_800_000_060.0
    clock.now = 1_800_000_060.0
    allowed = limiter.check("k", "GET /x")
    assert allowed.allowed
    assert allowed.remaining == 99


async def test_hour_limit_per_key_across_endpoints(clock: FakeClock) -> None:
    limiter = RateLimiter(1.0, False, clock)
    clock.now = 3600.0 * 500_000
    for n in range(1000):
        decision = limiter.check("k", f"GET /endpoint-{n % 20}")
        assert decision.allowed
    decision = limiter.check("k", "GET /fresh")
    assert not decision.allowed
    assert decision.limit == 1000
    assert decision.retry_after == 3600
    assert limiter.check("other-key", "GET /fresh").allowed


async def test_time_scale_shrinks_windows(clock: FakeClock) -> None:
    limiter = RateLimiter(60.0, False, clock)  # hour = 60 s, minute = 1 s
    clock.now = 6000.0
    for _ in range(100):
        assert limiter.check("k", "GET /x").allowed
    denied = limiter.check("k", "GET /x")
    assert denied.retry_after == 1
    assert denied.reset == 6001.0
    clock.advance(1.0)
    assert limiter.check("k", "GET /x").allowed


async def test_limits_off_sends_no_headers(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    response = await hit(http, f"{sim.base_url}/data/events/experiment/{sim.experiment_ids[0]}")
    assert "X-RateLimit-Limit" not in response.headers
