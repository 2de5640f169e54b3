"""Request counters, readable by tests and benchmarks through /_sim/stats."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any


class Stats:
    """What the server saw: statuses per route template, faults, 429s, media bytes, and media
    requests that leaked the API key."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._faults: Counter[str] = Counter()
        self.during_retry_after = 0
        self.rate_limited = 0
        self.media_bytes_served = 0
        self.media_requests_with_api_key = 0
        """Media GETs that carried the API key (X-API-Key or Authorization): must stay 0."""

    def record(self, route: str, status: int | str) -> None:
        self._requests[route][str(status)] += 1

    def fault(self, kind: str) -> None:
        self._faults[kind] += 1

    def snapshot(self) -> dict[str, Any]:
        by_status: Counter[str] = Counter()
        for statuses in self._requests.values():
            by_status.update(statuses)
        return {
            "requests": {route: dict(s) for route, s in self._requests.items()},
            "total": sum(by_status.values()),
            "by_status": dict(by_status),
            "during_retry_after": self.during_retry_after,
            "rate_limited": self.rate_limited,
            "faults": dict(self._faults),
            "media_bytes_served": self.media_bytes_served,
            "media_requests_with_api_key": self.media_requests_with_api_key,
        }
