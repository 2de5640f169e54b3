"""A budget-bound run says when and why it waits, logs each pause, and its ETA counts the
requests left against the budget (on a scaled clock)."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import settings_for
from rich.console import Console

from hyperstudy_bulk import segments
from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.budget import Budget, Wait, WindowState
from hyperstudy_bulk.progress import BarRenderer, LogRenderer, Monitor, TypeProgress
from hyperstudy_bulk.simulator import SimulatorConfig, serve

SCALE = 1200.0
"""The hour lasts 3 s, the minute 1/20 s, on the simulator and in the client alike."""


def test_seconds_to_send_counts_free_permits_returns_and_whole_periods() -> None:
    state = WindowState(limit=3, period=10.0, free=1, returns=[2.0, 5.0])
    assert state.seconds_to_send(0) == 0.0
    assert state.seconds_to_send(1) == 0.0
    assert state.seconds_to_send(2) == 2.0
    assert state.seconds_to_send(3) == 5.0
    assert state.seconds_to_send(4) == 10.0
    assert state.seconds_to_send(6) == 15.0
    assert state.seconds_to_send(7) == 20.0


def test_a_wait_reads_like_a_clock() -> None:
    assert str(Wait("the hourly budget", 751.2)) == (
        "waiting for the hourly budget: next request in 12:32"
    )


async def test_a_request_held_by_the_hourly_budget_is_shown_and_logged_once() -> None:
    logged: list[str] = []
    budget = Budget(per_hour=2, per_minute_per_endpoint=100, time_scale=7200, log=logged.append)
    for _ in range(2):
        async with budget.slot("data/events"):
            pass
    assert budget.waiting() is None
    held = [asyncio.create_task(_one(budget)) for _ in range(3)]
    await asyncio.sleep(0)  # let them reach the budget
    wait = budget.waiting()
    assert wait is not None
    assert wait.reason == "the hourly budget"
    assert 0 < wait.seconds <= 0.5
    await asyncio.gather(*held)
    assert logged == []  # a pause under a second is not worth a line


async def test_a_pause_of_a_second_or_more_is_logged_once() -> None:
    logged: list[str] = []
    budget = Budget(
        per_hour=2, per_minute_per_endpoint=100, time_scale=3600 / 1.2, log=logged.append
    )
    await asyncio.gather(_one(budget), _one(budget))
    await asyncio.gather(_one(budget), _one(budget))
    assert logged == ["waiting for the hourly budget: next request in 0:02"]


async def _one(budget: Budget) -> None:
    async with budget.slot("data/events"):
        pass


async def test_the_eta_early_in_a_budget_bound_run_is_within_a_quarter_of_the_truth(
    tmp_path: Path,
) -> None:
    config = SimulatorConfig(seed=4, rooms=2, participants=2, records=100, rate_limit=SCALE)
    logged: list[str] = []
    async with serve(config) as sim:
        settings = settings_for(
            sim,
            tmp_path,
            data_types="events",
            granularity="experiment",
            page_size=15,
            rate_limit_per_hour=12,
            rate_limit_per_minute_per_endpoint=100,
            rate_limit_time_scale=SCALE,
            media=False,
            verbose=True,
        )
        samples: list[tuple[float, float | None, str]] = []
        async with Downloader(settings, log=logged.append) as downloader:
            monitor = downloader.monitor()
            renderer = LogRenderer(monitor, io.StringIO())

            async def watch() -> None:
                while True:
                    samples.append((time.monotonic(), monitor.eta_seconds(), renderer.line()))
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch())
            manifest = await downloader.archive(sim.experiment_ids[0], monitor=monitor)
            ended = time.monotonic()
            watcher.cancel()
        assert manifest.complete
        assert sim.stats()["rate_limited"] == 0
    waiting = [(t, eta, line) for t, eta, line in samples if "waiting for" in line]
    assert waiting, samples[-1]
    at, eta, line = waiting[0]
    assert "waiting for the hourly budget: next request in 0:0" in line
    assert eta is not None
    ratio = eta / (ended - at)
    assert 0.75 <= ratio <= 1.25, (eta, ended - at)
    pauses = [message for message in logged if message.startswith("waiting for the hourly budget")]
    assert len(pauses) == 2, logged  # 31 requests, 12 an hour: two waits for the next hour


async def test_pages_received_but_not_yet_written_are_not_counted_as_requests_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer holds the second page, so the pages fetched ahead wait behind it: their
    requests are spent, and the ETA must not count them again (on a loaded machine that put a
    whole hour of budget too many in it)."""
    held = asyncio.Event()
    put = segments._GroupWriter.put
    calls = 0

    async def slow_put(writer: segments._GroupWriter, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            await held.wait()
        await put(writer, *args)

    monkeypatch.setattr(segments._GroupWriter, "put", slow_put)
    arrived = asyncio.Event()
    add_in_transit = TypeProgress.add_in_transit

    def count_and_tell(figures: TypeProgress, pages: int) -> None:
        add_in_transit(figures, pages)
        arrived.set()

    monkeypatch.setattr(TypeProgress, "add_in_transit", count_and_tell)
    config = SimulatorConfig(seed=4, rooms=2, participants=2, records=100)
    async with serve(config) as sim:
        settings = settings_for(
            sim,
            tmp_path,
            data_types="events",
            granularity="experiment",
            page_size=15,
            concurrency=4,
            media=False,
        )
        async with Downloader(settings) as downloader:
            monitor = downloader.monitor()
            run = asyncio.create_task(downloader.archive(sim.experiment_ids[0], monitor=monitor))
            figures = monitor.of("events")

            def served() -> int:
                routes = sim.stats()["requests"]
                return sum(sum(s.values()) for r, s in routes.items() if "/events" in r)

            while not (figures.in_transit >= 3 and served() == 1 + figures.in_transit):
                arrived.clear()  # until the pages asked ahead have all arrived
                await arrived.wait()
            pages = -(-figures.expected // 15)
            assert figures.records == 15
            assert figures.requests_left(15) == pages - served()
            held.set()
            manifest = await run
    assert manifest.complete
    assert figures.in_transit == 0
    assert figures.records == figures.expected == 441


@pytest.mark.parametrize("paused_by", ["429", "reset"])
async def test_a_server_pause_says_what_the_server_asked(paused_by: str) -> None:
    logged: list[str] = []
    budget = Budget(per_hour=100, per_minute_per_endpoint=100, log=logged.append)
    if paused_by == "429":
        budget.rate_limited(30)
        reason = "the server's Retry-After (HTTP 429)"
    else:
        budget.observe(0, 30)
        reason = "the server's rate-limit reset (X-RateLimit-Remaining 0)"
    wait = budget.waiting()
    assert wait is not None
    assert (wait.reason, round(wait.seconds)) == (reason, 30)
    monitor = Monitor(budget=budget)
    line = LogRenderer(monitor, io.StringIO()).line()
    assert f"waiting for {reason}: next request in 0:30" in line


async def test_the_media_eta_counts_the_signed_urls_left_to_mint_against_the_budget() -> None:
    budget = Budget(per_hour=2, per_minute_per_endpoint=100, time_scale=3600 / 100)
    for _ in range(2):
        async with budget.slot("data/recordings/download"):
            pass
    monitor = Monitor(budget=budget)
    monitor.media.mint_endpoint = "data/recordings/download"
    monitor.media.mints_left = 4  # 2 when the permits come back in 100 s, 2 an hour later
    eta = monitor.media_eta_seconds()
    assert eta is not None
    assert 199 < eta <= 200
    monitor.media.mints_left = 0
    assert monitor.media_eta_seconds() is None


async def test_the_bars_say_why_the_run_waits() -> None:
    budget = Budget(per_hour=100, per_minute_per_endpoint=100)
    budget.rate_limited(90)
    monitor = Monitor(budget=budget)
    monitor.of("events").streams = 1
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80, color_system=None)
    BarRenderer(monitor, console).final()
    assert "waiting for the server's Retry-After (HTTP 429): next request in 1:30" in (
        screen.getvalue()
    )


@pytest.mark.parametrize(("seconds_so_far", "low", "high"), [(0.1, 99, 101), (10, 985, 991)])
async def test_the_eta_is_the_longer_of_the_budgets_and_the_networks_forecast(
    seconds_so_far: float, low: float, high: float
) -> None:
    budget = Budget(per_hour=1, per_minute_per_endpoint=100, time_scale=360)  # hour of 10 s
    async with budget.slot("data/events"):
        pass
    monitor = Monitor(budget=budget, page_size=lambda data_type: 1000)
    monitor.started -= seconds_so_far
    figures = monitor.of("events")
    figures.endpoint, figures.streams = "data/events", 1
    figures.records, figures.expected = 100, 10_000
    # 10 requests left, one an hour: 100 s; 9,900 records at 1,000/s or at 10/s.
    eta = monitor.eta_seconds()
    assert eta is not None
    assert low < eta < high
