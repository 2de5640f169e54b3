"""Requests in flight: a fixed number, or `auto`, a limit that adapts to the server's latency.

`VegasLimit` is the adaptive policy, a pure object fed one sample per response (no clock, no
I/O). It is TCP Vegas as Netflix's concurrency-limits applies it to requests (VegasLimit):

- `rtt_noload` is the least latency seen for a kind of request, from requests sent while no
  more than `minimum` were being sent (so it holds no queueing of ours). Kinds are page sizes: a
  page of 10,000 records takes longer than a page of 1 for reasons that are not queueing. Every
  `probe_every` samples the minimums are forgotten and the limit drops to `minimum` until they
  are measured again (BBR's ProbeRTT), so a server that became slower for good is not read as
  a queue forever. Until a kind has such a minimum its samples only say whether it failed.
- `queue = limit * (1 - rtt_noload / rtt)` estimates how many of our requests wait in a queue
  (the server's or the network's) rather than being worked on.
- The limit changes once per round (as many samples as the limit), as TCP Vegas changes once
  per round trip, from the round's mean queueing ratio: the requests of a round were sent
  under the previous limit, so reacting to each of them would overshoot.
- A drop (a 5xx, a timeout, a reset) multiplies the limit by `backoff` (0.75) at once: an
  overloaded server is given room. Further drops within the next round's worth of samples
  belong to the same volley (requests sent before the backoff) and change nothing more.
- A sample taken while fewer than half the limit were being sent says nothing about a larger
  limit (the rate budget or the work ran short), so it changes nothing: the limit never grows
  past what is used, and a budget-bound run is never pushed faster than the budget.
- Otherwise, with `l = log10(limit)`: queue <= l grows the limit by 6 l (nothing waits: more in
  flight bring more records per second); queue < 3 l grows it by l; queue > 6 l shrinks it
  by l (latency rises with requests in flight: more would only queue); in between it stays.
  With a server that serves C pages at once and queues the rest, the limit settles a few
  requests above C, where records per second stop growing.

The limit stays within [minimum, maximum] (4 to 64 by default) and starts at 16, after a first
round trip at `minimum` that measures rtt_noload.
`ConcurrencyGate` applies a limit (adaptive or fixed) to requests in asyncio.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class VegasLimit:
    """The adaptive limit on requests in flight (see the module docstring)."""

    def __init__(
        self,
        *,
        minimum: int = 4,
        maximum: int = 64,
        initial: int = 16,
        backoff: float = 0.75,
        probe_every: int = 1000,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.initial = min(max(initial, minimum), maximum)
        self._limit = float(minimum)
        self._backoff = backoff
        self._probe_every = probe_every
        self._samples = 0
        self._noload: dict[int, float] = {}
        self._window: list[float] = []
        """This round's queueing ratios, 1 - rtt_noload / rtt, one per sample."""
        self._window_in_flight = 0
        self._calm_until = 0
        """Failures before this sample belong to the volley already answered with a backoff."""
        self._restore: float | None = float(self.initial)
        """The limit to go back to once a probe has measured rtt_noload (a run starts with
        one: its first round trip goes at `minimum`)."""

    @property
    def limit(self) -> int:
        return int(self._limit)

    def on_sample(
        self, rtt: float, *, in_flight: int, kind: int = 0, dropped: bool = False
    ) -> None:
        """One response: its latency in seconds (sending to last byte), the requests being sent
        when it was sent (itself included), its kind (page size), and whether it failed in a way
        that says the server is overloaded (5xx, timeout, reset)."""
        self._samples += 1
        if self._samples % self._probe_every == 0 and self._restore is None:
            self._noload.clear()
            self._restore, self._limit = self._limit, float(self.minimum)
            self._window, self._window_in_flight = [], 0
        if rtt > 0 and not dropped and in_flight <= self.minimum:
            self._noload[kind] = min(rtt, self._noload.get(kind, rtt))
            if self._restore is not None:
                self._limit, self._restore = self._restore, None
                return
        if self._restore is not None:
            return  # probing: nothing is known to compare with yet
        if dropped:
            if self._samples >= self._calm_until:
                self._set(self._limit * self._backoff)
                self._calm_until = self._samples + self.limit
                self._window, self._window_in_flight = [], 0
            return
        self._window_in_flight = max(self._window_in_flight, in_flight)
        if rtt > 0 and kind in self._noload:
            self._window.append(max(0.0, 1 - self._noload[kind] / rtt))
        if len(self._window) >= max(1.0, self._limit):
            self._end_round()

    def _end_round(self) -> None:
        """One change per round trip's worth of samples, as TCP Vegas changes once per RTT."""
        ratios, in_flight = self._window, self._window_in_flight
        self._window, self._window_in_flight = [], 0
        if not ratios or in_flight * 2 < self._limit:
            return
        queue = self._limit * sum(ratios) / len(ratios)
        step = math.log10(max(self._limit, 10.0))
        if queue <= step:
            self._set(self._limit + 6 * step)
        elif queue < 3 * step:
            self._set(self._limit + step)
        elif queue > 6 * step:
            self._set(self._limit - step)

    def _set(self, limit: float) -> None:
        self._limit = min(float(self.maximum), max(float(self.minimum), limit))


class Timing:
    """One request's passage through the gate: `sent()` when it goes on the wire (after the
    budget admitted it), then `answered()` or `failed()`."""

    def __init__(self, gate: ConcurrencyGate, kind: int) -> None:
        self._gate = gate
        self._kind = kind
        self._sent_at: float | None = None
        self._in_flight = 0

    def sent(self) -> None:
        self._gate.sending += 1
        self._in_flight = self._gate.sending
        self._sent_at = asyncio.get_running_loop().time()

    def answered(self, *, overloaded: bool = False) -> None:
        """A response arrived; `overloaded` for a 5xx."""
        self._finish(sample=True, dropped=overloaded)

    def failed(self) -> None:
        """No response: a timeout or a reset."""
        self._finish(sample=True, dropped=True)

    def abandon(self) -> None:
        """End without a sample (cancelled, or a 429: the budget's business, not latency)."""
        self._finish(sample=False, dropped=False)

    def _finish(self, *, sample: bool, dropped: bool) -> None:
        if self._sent_at is None:
            return
        rtt = asyncio.get_running_loop().time() - self._sent_at
        self._sent_at = None
        self._gate.sending -= 1
        if sample and self._gate.policy is not None:
            self._gate.policy.on_sample(
                rtt, in_flight=self._in_flight, kind=self._kind, dropped=dropped
            )
            self._gate.wake()


class ConcurrencyGate:
    """At most `limit` requests hold a slot at once; the limit is fixed (an int) or follows a
    `VegasLimit` fed by the requests' timings. Cancelling a waiting request takes nothing."""

    def __init__(self, limit: int | VegasLimit) -> None:
        self.policy = limit if isinstance(limit, VegasLimit) else None
        self._fixed = limit if isinstance(limit, int) else 0
        self.in_flight = 0
        self.sending = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self.policy.limit if self.policy is not None else self._fixed

    @property
    def maximum(self) -> int:
        return self.policy.maximum if self.policy is not None else self._fixed

    @property
    def typical(self) -> int:
        """The limit to size pools of streams by: fixed, or where the adaptive one starts."""
        return self.policy.initial if self.policy is not None else self._fixed

    @asynccontextmanager
    async def slot(self, kind: int = 0) -> AsyncIterator[Timing]:
        """Wait for a slot and hold it for the block; the Timing reports the request's
        latency (a request never sent, or cancelled, reports nothing)."""
        await self._acquire()
        timing = Timing(self, kind)
        try:
            yield timing
        finally:
            timing.abandon()
            self.in_flight -= 1
            self.wake()

    async def _acquire(self) -> None:
        while self.in_flight >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.wake()  # pass on the wake-up this request will not use
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.in_flight += 1

    def wake(self) -> None:
        """Let as many waiting requests go as the limit now allows."""
        free = self.limit - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1


__all__ = ["ConcurrencyGate", "Timing", "VegasLimit"]
