"""Injected failures: the spec grammar and the per-request draw.

Grammar (comma-separated, whitespace ignored, "" or "none" means no faults)::

    spec   := item ("," item)*
    item   := KIND "=" probability | OPTION "=" number
    KIND   := 500 | 502 | 503 | 504 | 500-html | 502-html | 503-html | 504-html
            | reset | truncate | badjson | 429-burst | slow | spike | short-page   (API requests)
            | media-reset | media-truncate | media-norange                         (media GETs)
            | media-expire                                  (signed URLs minted already expired)
    OPTION := slow-s (seconds a slow response stalls, default 30)
            | spike-ms (extra latency of a spike, default 1500)
            | burst (length of a 429 burst in requests, default 5)
            | retry-after (Retry-After seconds sent during a burst, default 1)

API kinds share one partition of [0, 1) (their probabilities must sum to <= 1), media kinds
another, media-expire a third. A request's draw hashes (seed, method, raw path, sorted query,
attempt), where attempt counts earlier identical requests: retries get fresh, reproducible draws
whatever the concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperstudy_bulk.simulator.ids import hash_ints, hash_text, unit

API_KINDS = (
    "500",
    "502",
    "503",
    "504",
    "500-html",
    "502-html",
    "503-html",
    "504-html",
    "reset",
    "truncate",
    "badjson",
    "429-burst",
    "slow",
    "spike",
    "short-page",
)
MEDIA_KINDS = ("media-reset", "media-truncate", "media-norange")
MINT_KINDS = ("media-expire",)
_OPTIONS = {
    "slow-s": "slow_s",
    "spike-ms": "spike_ms",
    "burst": "burst",
    "retry-after": "retry_after",
}
_SALTS = {API_KINDS: 1, MEDIA_KINDS: 2, MINT_KINDS: 3}


@dataclass(frozen=True)
class FaultSpec:
    """Fault probabilities and their options; immutable so it can be swapped atomically."""

    rates: tuple[tuple[str, float], ...] = ()
    slow_s: float = 30.0
    spike_ms: float = 1500.0
    burst: int = 5
    retry_after: int = 1

    @classmethod
    def none(cls) -> FaultSpec:
        return cls()

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Parse the grammar above; raises ValueError with a one-line reason."""
        text = text.strip()
        if text in ("", "none"):
            return cls()
        rates: dict[str, float] = {}
        options: dict[str, float] = {}
        for raw in text.split(","):
            name, sep, value = raw.strip().partition("=")
            name = name.strip()
            if not sep:
                raise ValueError(f"fault item {raw.strip()!r} is not NAME=VALUE")
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"fault {name!r}: {value.strip()!r} is not a number") from None
            if name in API_KINDS + MEDIA_KINDS + MINT_KINDS:
                if not 0.0 <= number <= 1.0:
                    raise ValueError(f"fault {name!r}: probability {number} not in [0, 1]")
                rates[name] = number
            elif name in _OPTIONS:
                if number < 0:
                    raise ValueError(f"fault option {name!r} must be >= 0")
                options[_OPTIONS[name]] = number
            else:
                raise ValueError(f"unknown fault kind or option {name!r}")
        for group in _SALTS:
            if sum(rates.get(k, 0.0) for k in group) > 1.0 + 1e-9:
                raise ValueError(f"fault probabilities of {', '.join(group)} sum to more than 1")
        return cls(
            rates=tuple(rates.items()),
            slow_s=options.get("slow_s", 30.0),
            spike_ms=options.get("spike_ms", 1500.0),
            burst=int(options.get("burst", 5)),
            retry_after=max(1, int(options.get("retry_after", 1))),
        )

    def __str__(self) -> str:
        items = [f"{k}={v:g}" for k, v in self.rates]
        if self.rates:
            items += [
                f"slow-s={self.slow_s:g}",
                f"spike-ms={self.spike_ms:g}",
                f"burst={self.burst}",
                f"retry-after={self.retry_after}",
            ]
        return ",".join(items) or "none"

    def draw(self, group: tuple[str, ...], seed: int, request_key: str, attempt: int) -> str | None:
        """The fault kind of `group` for this attempt of this request, or None."""
        rates = dict(self.rates)
        if not any(rates.get(k) for k in group):
            return None
        u = unit(hash_ints(seed, _SALTS[group], hash_text(request_key), attempt))
        edge = 0.0
        for kind in group:
            edge += rates.get(kind, 0.0)
            if u < edge:
                return kind
        return None


def request_key(method: str, raw_path: str, query: list[tuple[str, str]]) -> str:
    """Canonical identity of a request: the same page asked again gets the same key."""
    return method + " " + raw_path + "?" + "&".join(f"{k}={v}" for k, v in sorted(query))
