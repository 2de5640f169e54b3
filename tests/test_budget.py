"""The shared budget: a full burst at once, then nothing until a permit's window has passed."""

from __future__ import annotations

import asyncio

from hyperstudy_bulk.budget import Budget


async def _hold(
    budget: Budget, endpoint: str, entered: asyncio.Event, leave: asyncio.Event
) -> None:
    async with budget.slot(endpoint):
        entered.set()
        await leave.wait()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_small_job_starts_at_full_speed_then_waits_for_the_window() -> None:
    # Windows scaled so that a permit comes back 36 ms after its response ended.
    budget = Budget(per_hour=3, per_minute_per_endpoint=100, time_scale=100_000)
    leave = asyncio.Event()
    entered = [asyncio.Event() for _ in range(4)]
    tasks = [asyncio.create_task(_hold(budget, "e", entered[i], leave)) for i in range(4)]
    await _settle()
    assert [e.is_set() for e in entered] == [True, True, True, False]
    leave.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert all(event.is_set() for event in entered)


async def test_each_endpoint_has_its_own_minute_window() -> None:
    budget = Budget(per_hour=100, per_minute_per_endpoint=1, time_scale=1.0)
    leave = asyncio.Event()
    first, second, other = asyncio.Event(), asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(_hold(budget, "a", first, leave)),
        asyncio.create_task(_hold(budget, "a", second, leave)),
        asyncio.create_task(_hold(budget, "b", other, leave)),
    ]
    await _settle()
    assert (first.is_set(), second.is_set(), other.is_set()) == (True, False, True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_429_pauses_every_worker() -> None:
    budget = Budget(per_hour=100, per_minute_per_endpoint=100)
    budget.rate_limited(30.0)
    entered, leave = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_hold(budget, "e", entered, leave))
    await _settle()
    assert not entered.is_set()
    assert budget.counters.rate_limited == 1
    assert 29.0 < budget.counters.paused_seconds <= 30.0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_exhausted_remaining_header_pauses_until_reset() -> None:
    clock = 1_000_000_000.0
    budget = Budget(per_hour=100, per_minute_per_endpoint=100, wall_clock=lambda: clock)
    budget.observe(remaining=5, reset=clock + 10)
    assert budget.counters.paused_seconds == 0
    budget.observe(remaining=0, reset=clock + 10)
    assert 9.0 < budget.counters.paused_seconds <= 10.0


async def test_no_pause_is_longer_than_the_retry_budget() -> None:
    clock = 1_000_000_000.0
    budget = Budget(
        per_hour=100, per_minute_per_endpoint=100, max_pause=30.0, wall_clock=lambda: clock
    )
    budget.rate_limited(86_400.0)
    budget.observe(remaining=0, reset=clock + 600)
    budget.observe(remaining=0, reset=600.0)
    assert budget.counters.rate_limited == 1
    assert budget.counters.paused_seconds == 0
    budget.rate_limited(30.0)
    assert 29.0 < budget.counters.paused_seconds <= 30.0


async def test_a_request_cancelled_while_waiting_gives_its_permits_back() -> None:
    budget = Budget(per_hour=1, per_minute_per_endpoint=2, time_scale=1.0)
    leave = asyncio.Event()
    holder_in, waiter_in = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold(budget, "e", holder_in, leave))
    await _settle()
    # The waiter takes the endpoint's second permit, then waits for the key's only permit.
    waiter = asyncio.create_task(_hold(budget, "e", waiter_in, leave))
    await _settle()
    endpoint_permits = budget._window("e")._permits
    assert endpoint_permits._value == 0
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert endpoint_permits._value == 1
    assert not waiter_in.is_set()
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)
