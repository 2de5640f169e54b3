"""Rate limits (contract §5): 1000 requests per hour per key, 100 per minute per endpoint.

`scale` shrinks both windows (scale 60: the hour lasts 60 s, the minute 1 s). Fixed windows are
aligned to the clock (window n covers [n*W, (n+1)*W)); sliding windows count the trailing W seconds.
A rejected request consumes nothing. Time comes from an injected clock (unix seconds) so tests can
move it without sleeping.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

HOUR_LIMIT = 1000
MINUTE_LIMIT = 100


@dataclass(frozen=True)
class Decision:
    """Outcome for one request; limit/remaining/reset describe the tighter of the two limits."""

    allowed: bool
    retry_after: int
    limit: int
    remaining: int
    reset: float


class _Window:
    """One counter: fixed (aligned) or sliding (trailing) over `length` seconds."""

    def __init__(self, limit: int, length: float, sliding: bool) -> None:
        self.limit = limit
        self.length = length
        self.sliding = sliding
        self._hits: deque[float] = deque()
        self._index = -1
        self._count = 0

    def state(self, now: float) -> tuple[int, float]:
        """(requests counted now, unix time the oldest counted request stops counting)."""
        if self.sliding:
            while self._hits and self._hits[0] <= now - self.length:
                self._hits.popleft()
            oldest = self._hits[0] if self._hits else now
            return len(self._hits), oldest + self.length
        index = math.floor(now / self.length)
        if index != self._index:
            self._index, self._count = index, 0
        return self._count, (index + 1) * self.length

    def hit(self, now: float) -> None:
        if self.sliding:
            self._hits.append(now)
        else:
            self._count += 1


class RateLimiter:
    """Per-key hourly and per-key-and-endpoint minutely limits."""

    def __init__(self, scale: float, sliding: bool, clock: Callable[[], float]) -> None:
        self._hour = 3600.0 / scale
        self._minute = 60.0 / scale
        self._sliding = sliding
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def _window(self, key: str, endpoint: str) -> _Window:
        window = self._windows.get((key, endpoint))
        if window is None:
            hourly = endpoint == ""
            limit = HOUR_LIMIT if hourly else MINUTE_LIMIT
            length = self._hour if hourly else self._minute
            window = self._windows[(key, endpoint)] = _Window(limit, length, self._sliding)
        return window

    def check(self, key: str, endpoint: str) -> Decision:
        """Count the request if both limits allow it; otherwise say how long to wait."""
        now = self._clock()
        windows = (self._window(key, ""), self._window(key, endpoint))
        blocked = [reset for w in windows for count, reset in [w.state(now)] if count >= w.limit]
        if blocked:
            tight = min(windows, key=lambda w: w.limit - w.state(now)[0])
            wait = max(blocked) - now
            return Decision(False, max(1, math.ceil(wait)), tight.limit, 0, max(blocked))
        for w in windows:
            w.hit(now)
        left, limit, reset = min(
            (w.limit - c, w.limit, r) for w in windows for c, r in [w.state(now)]
        )
        return Decision(True, 0, limit, left, reset)

    def reset(self) -> None:
        self._windows.clear()
