"""The request budget all workers share: the key's hourly limit, each endpoint's per-minute
limit, and the pause a 429's Retry-After (or an exhausted X-RateLimit-Remaining) imposes.

Why not a token bucket such as aiolimiter's `AsyncLimiter(1000, 3600)`: a bucket lets its
capacity through at once and then refills continuously, so in the hour after a burst it admits
up to twice the limit, and a server counting in sliding windows answers 429. Shrinking the
burst to stay safe makes a small job trickle at the hourly average. A sliding window gives both:
up to `limit` requests at once, and never more than `limit` in any window of `period` seconds.

Each request holds one permit of each window it belongs to; the permit is returned `period`
seconds after the response ended, not after it was sent. The server counted the request at
some moment before the response ended, so the next request using that permit arrives at least
`period` after it: safe whether the server's windows are fixed or sliding, and whatever the
latency. Times are the event loop's clock (seconds).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass


class SlidingWindow:
    """At most `limit` requests in any `period` seconds (permits return `period` after use)."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self._permits = asyncio.Semaphore(limit)
        self._returns: deque[float] = deque()
        """Loop times at which used permits come back, oldest first."""
        self.waiting = 0
        """Requests held at this window right now."""
        self._used = 0
        self._held = 0.0
        self._held_since: float | None = None

    async def acquire(self) -> None:
        clock = asyncio.get_running_loop().time
        if self._held_since is None and self.holds(arriving=1):
            self._held_since = clock()
        self.waiting += 1
        try:
            await self._permits.acquire()
        finally:
            self.waiting -= 1
            if self._held_since is not None and not self.waiting:
                self._held += clock() - self._held_since
                self._held_since = None
        self._used += 1

    def held_seconds(self, now: float) -> float:
        """How long, in all, some request has waited here for a permit."""
        return self._held + (now - self._held_since if self._held_since is not None else 0.0)

    def release_later(self) -> None:
        loop = asyncio.get_running_loop()
        self._returns.append(loop.time() + self.period)
        loop.call_later(self.period, self._release)

    def _release(self) -> None:
        self._returns.popleft()
        self.release_now()

    def release_now(self) -> None:
        """Return a permit the request never used (it was cancelled before being sent)."""
        self._used -= 1
        self._permits.release()

    def state(self, now: float) -> WindowState:
        """Permits free now and, for those in use, seconds until each comes back (a request
        still in flight counts as returning a whole period from now)."""
        free = self.limit - self._used
        returns = [max(0.0, at - now) for at in self._returns]
        returns += [self.period] * max(0, self.limit - free - len(returns))
        return WindowState(self.limit, self.period, free, returns)

    def next_return(self, now: float) -> float:
        """Seconds until a permit in use comes back (a whole period when all are in flight)."""
        return max(0.0, self._returns[0] - now) if self._returns else self.period

    def holds(self, arriving: int = 0) -> bool:
        """Whether some of the requests waiting here (and `arriving` more) must wait for a
        permit to come back: a permit just released to a waiter counts as that waiter's."""
        return self.waiting + arriving > self.limit - self._used


@dataclass(frozen=True)
class WindowState:
    limit: int
    period: float
    free: int
    returns: list[float]
    """Seconds from now until each permit in use comes back, soonest first."""

    def seconds_to_send(self, requests: int) -> float:
        """When the last of `requests` more may be sent: `free` at once, then one as each
        permit in use comes back, and every permit so used comes back `period` after it
        (network time is not counted)."""
        if requests <= self.free or self.limit <= 0:
            return 0.0
        starts = [0.0] * self.free + self.returns
        cycles, index = divmod(requests - 1, self.limit)
        return starts[min(index, len(starts) - 1)] + cycles * self.period


@dataclass(frozen=True)
class Wait:
    """Why requests are held right now, and for how long at least (seconds)."""

    reason: str
    seconds: float

    def __str__(self) -> str:
        minutes, seconds = divmod(math.ceil(self.seconds), 60)
        return f"waiting for {self.reason}: next request in {minutes}:{seconds:02d}"


class PauseGate:
    """Closed until a moment on the loop clock; every worker waits at it before sending."""

    def __init__(self) -> None:
        self._until = 0.0

    def close_for(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._until = max(self._until, loop.time() + max(0.0, seconds))

    @property
    def remaining(self) -> float:
        return max(0.0, self._until - asyncio.get_running_loop().time())

    async def wait(self) -> None:
        # A loop, not an Event: another 429 may push the deadline further while we sleep.
        while (delay := self.remaining) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)


@dataclass
class BudgetCounters:
    rate_limited: int = 0
    paused_seconds: float = 0.0


class Budget:
    """Admits a request when the hourly key window, the endpoint's minute window and the pause
    gate all allow it. `time_scale` divides both periods (for a simulator on a fast clock);
    `max_pause` (seconds, the retry budget) bounds every pause a server asks for."""

    HOUR = 3600.0
    MINUTE = 60.0

    def __init__(
        self,
        *,
        per_hour: int,
        per_minute_per_endpoint: int,
        time_scale: float = 1.0,
        max_pause: float = HOUR,
        wall_clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._key = SlidingWindow(per_hour, self.HOUR / time_scale)
        self._per_endpoint = per_minute_per_endpoint
        self._minute = self.MINUTE / time_scale
        self._endpoints: dict[str, SlidingWindow] = {}
        self._gate = PauseGate()
        self._max_pause = max_pause
        self._wall_clock = wall_clock
        self._in_flight = 0
        self._log = log
        self._pause_reason = "a rate-limit pause"
        self._logged_until = 0.0
        """Loop time at which the last pause logged ends: until then it is not logged again."""
        self.counters = BudgetCounters()

    def _window(self, endpoint: str) -> SlidingWindow:
        window = self._endpoints.get(endpoint)
        if window is None:
            window = self._endpoints[endpoint] = SlidingWindow(self._per_endpoint, self._minute)
        return window

    @asynccontextmanager
    async def slot(self, endpoint: str) -> AsyncIterator[None]:
        """Wait until one request to `endpoint` may be sent; hold its permits while it runs."""
        window = self._window(endpoint)
        self._announce(self._holding(endpoint))
        await self._gate.wait()
        await window.acquire()
        try:
            await self._key.acquire()
        except BaseException:
            window.release_now()
            raise
        try:
            await self._gate.wait()
        except BaseException:
            window.release_now()
            self._key.release_now()
            raise
        # Taking the last permit while others wait starts a pause too.
        self._announce(self._holding(None))
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            window.release_later()
            self._key.release_later()

    def _holding(self, endpoint: str | None) -> Wait | None:
        """What holds a request to `endpoint` (any endpoint: None) back right now."""
        if (paused := self._gate.remaining) > 0:
            return Wait(self._pause_reason, paused)
        now = asyncio.get_running_loop().time()
        windows = [("the hourly budget", self._key)]
        windows += [
            (f"the per-minute budget of {name}", window)
            for name, window in self._endpoints.items()
            if endpoint in (None, name)
        ]
        for reason, window in windows:
            if window.holds(arriving=0 if endpoint is None else 1):
                return Wait(reason, window.next_return(now))
        return None

    def waiting(self) -> Wait | None:
        """Why requests are held right now, if they are (for progress displays)."""
        return self._holding(None)

    def _announce(self, wait: Wait | None) -> None:
        """Log a pause of at least a second once, when it begins (a request meets it, or
        takes the last permit while others wait). Shorter waits, as permits come back one
        by one, are not worth a line."""
        now = asyncio.get_running_loop().time()
        if wait is not None and wait.seconds >= 1.0 and now >= self._logged_until:
            self._logged_until = now + wait.seconds
            self._log(str(wait))

    def held_seconds(self) -> float:
        """How long requests have been held back so far (the longest any one window held
        them, plus the server's pauses): time the network was not the limit."""
        now = asyncio.get_running_loop().time()
        windows = [self._key, *self._endpoints.values()]
        return max(w.held_seconds(now) for w in windows) + self.counters.paused_seconds

    def seconds_to_send(self, requests_by_endpoint: Mapping[str, int]) -> float:
        """The least time until all these requests may be sent, given the permits in use now
        (each window counted alone; network time and pauses not included). The requests
        may include those in flight now: they are already sent."""
        now = asyncio.get_running_loop().time()
        total = max(0, sum(requests_by_endpoint.values()) - self._in_flight)
        seconds = [self._key.state(now).seconds_to_send(total)]
        for endpoint, count in requests_by_endpoint.items():
            seconds.append(self._window(endpoint).state(now).seconds_to_send(count))
        return max(seconds)

    def rate_limited(self, retry_after: float) -> None:
        """A 429 arrived: nobody sends again until `retry_after` seconds have passed (unless
        that is longer than `max_pause`: then the request that met it ends instead)."""
        self.counters.rate_limited += 1
        if retry_after <= self._max_pause:
            self._pause_reason = "the server's Retry-After (HTTP 429)"
            self.pause(retry_after)

    def pause(self, seconds: float) -> None:
        before = self._gate.remaining
        self._gate.close_for(seconds)
        self.counters.paused_seconds += max(0.0, self._gate.remaining - before)

    def observe(self, remaining: int | None, reset: float | None) -> None:
        """Obey X-RateLimit-Remaining/Reset: when the server says no more requests than those
        already in flight fit before the reset, pause until the reset. `reset` is unix seconds
        (a small number is read as seconds from now). A reset further than `max_pause` away is
        not waited for: the server's 429, if it comes, says how long to wait."""
        if remaining is None or reset is None or remaining > self._in_flight:
            return
        seconds = reset if reset < 1e9 else reset - self._wall_clock()
        if 0 < seconds <= self._max_pause:
            self._pause_reason = "the server's rate-limit reset (X-RateLimit-Remaining 0)"
            self.pause(seconds)
