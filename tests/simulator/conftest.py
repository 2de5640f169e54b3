"""Fixtures for the simulator's own tests: a fake clock, a server on the test's loop, a session,
and helpers that read pages over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from hyperstudy_bulk.simulator import SimulatorConfig, serve
from hyperstudy_bulk.simulator.server import SimulatorHandle

SMALL = SimulatorConfig(seed=3, rooms=3, participants=3, records=40)


class FakeClock:
    """Unix seconds that only move when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """Stands in for asyncio.sleep: remembers the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def sim(clock: FakeClock, sleeps: RecordingSleep) -> AsyncIterator[SimulatorHandle]:
    async with serve(SMALL, clock=clock, sleep=sleeps) as handle:
        yield handle


@pytest.fixture
async def http(sim: SimulatorHandle) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"X-API-Key": sim.api_key}) as session:
        yield session


async def get_json(
    session: aiohttp.ClientSession, url: str, **params: Any
) -> tuple[int, dict[str, Any]]:
    async with session.get(url, params=params) as response:
        return response.status, await response.json(content_type=None)


async def page_all(
    http: aiohttp.ClientSession, url: str, limit: int, **params: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    metas = []
    offset = 0
    while True:
        status, body = await get_json(http, url, limit=limit, offset=offset, **params)
        assert status == 200, body
        rows += body["data"]
        metas.append(body["metadata"])
        pagination = body["metadata"]["pagination"]
        if not pagination["hasMore"]:
            return rows, metas
        offset = pagination["nextOffset"]
