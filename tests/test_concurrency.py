"""The adaptive limit on requests in flight, fed with samples (no network, no clock), and the
gate that applies it."""

from __future__ import annotations

import asyncio

import pytest

from hyperstudy_bulk.concurrency import ConcurrencyGate, VegasLimit


def _queueing_server(limit: VegasLimit, *, capacity: int, base: float, rounds: int) -> list[int]:
    """Feed `limit` as a server serving `capacity` requests at once would: with n in flight,
    each waits base * max(1, n / capacity). Returns the limit after each round."""
    seen = []
    for _ in range(rounds):
        in_flight = limit.limit
        rtt = base * max(1.0, in_flight / capacity)
        for _ in range(in_flight):
            limit.on_sample(rtt, in_flight=in_flight)
        seen.append(limit.limit)
    return seen


def test_the_limit_grows_to_its_maximum_while_latency_stays_flat() -> None:
    limit = VegasLimit()
    assert limit.limit == 4  # a first round trip measures the latency without load
    limit.on_sample(0.030, in_flight=1)
    assert limit.limit == 16
    for _ in range(400):
        limit.on_sample(0.030, in_flight=limit.limit)
    assert limit.limit == 64


@pytest.mark.parametrize("capacity", [6, 12, 24, 40])
def test_the_limit_settles_just_above_what_a_queueing_server_serves_at_once(
    capacity: int,
) -> None:
    limit = VegasLimit()
    settled = _queueing_server(limit, capacity=capacity, base=0.05, rounds=200)[-100:]
    # records per second peak from `capacity` in flight on; beyond it requests only queue.
    # A round now and then at the minimum re-measures the latency without load.
    near_peak = [n for n in settled if capacity <= n <= capacity + 12]
    assert len(near_peak) >= 95
    assert max(settled) <= capacity + 12


def test_the_limit_backs_off_on_failures_but_not_below_its_minimum() -> None:
    limit = VegasLimit(initial=40)
    limit.on_sample(0.03, in_flight=1)
    limit.on_sample(0.03, in_flight=40, dropped=True)
    assert limit.limit == 30
    for _ in range(29):  # the rest of the volley: requests sent before the backoff
        limit.on_sample(5.0, in_flight=40, dropped=True)
    assert limit.limit == 30
    for _ in range(300):
        limit.on_sample(5.0, in_flight=limit.limit, dropped=True)
    assert limit.limit == 4


def test_the_limit_does_not_grow_past_what_is_used() -> None:
    """A budget-bound run (few requests sent at once) is never pushed faster."""
    limit = VegasLimit()
    for _ in range(100):
        limit.on_sample(0.030, in_flight=3)
    assert limit.limit == 16
    for _ in range(100):
        limit.on_sample(0.030, in_flight=7)
    assert limit.limit == 16


def test_rising_latency_shrinks_the_limit() -> None:
    limit = VegasLimit(initial=48)
    limit.on_sample(0.030, in_flight=1)
    for _ in range(900):
        limit.on_sample(0.090, in_flight=limit.limit)
    assert limit.limit < 30


def test_larger_pages_taking_longer_is_not_read_as_queueing() -> None:
    limit = VegasLimit()
    limit.on_sample(0.030, in_flight=1, kind=1)
    limit.on_sample(0.800, in_flight=1, kind=10_000)
    for _ in range(200):
        limit.on_sample(0.030, in_flight=limit.limit, kind=1)
        limit.on_sample(0.800, in_flight=limit.limit, kind=10_000)
    assert limit.limit == 64


async def test_a_fixed_gate_holds_at_most_its_limit() -> None:
    gate = ConcurrencyGate(3)
    peak = 0

    async def request() -> None:
        nonlocal peak
        async with gate.slot():
            peak = max(peak, gate.in_flight)
            await asyncio.sleep(0)

    await asyncio.gather(*(request() for _ in range(20)))
    assert peak == 3
    assert gate.in_flight == 0


async def test_an_adaptive_gate_lets_more_through_as_its_limit_grows() -> None:
    gate = ConcurrencyGate(VegasLimit(minimum=4, maximum=64, initial=16))
    release = asyncio.Event()
    peak = 0

    async def request() -> None:
        nonlocal peak
        async with gate.slot() as timing:
            timing.sent()
            peak = max(peak, gate.sending)
            await release.wait()
            await asyncio.sleep(0)
            timing.answered()

    tasks = [asyncio.ensure_future(request()) for _ in range(30)]
    await asyncio.sleep(0)
    assert gate.in_flight == 4
    release.set()
    await asyncio.gather(*tasks)
    assert peak > 4
    assert gate.in_flight == gate.sending == 0


async def test_a_cancelled_waiter_takes_no_slot() -> None:
    gate = ConcurrencyGate(1)
    async with gate.slot():
        waiter = asyncio.ensure_future(gate.slot().__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert gate.in_flight == 0
    async with gate.slot():
        assert gate.in_flight == 1
