"""The simulator's settings: one frozen value shared by the library, the CLI and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hyperstudy_bulk.simulator.faults import FaultSpec

RateLimit = Literal["off", "production"] | float
RateWindow = Literal["fixed", "sliding"]
OversizeLimit = Literal["cap", "reject", "timeout"]


@dataclass(frozen=True, kw_only=True)
class SimulatorConfig:
    """What to simulate.

    records is a scale: the mean number of records per participant per ordinary data type in one
    room (heavy types such as eyetracking and continuous ratings get several times more).
    rate_limit "production" applies the documented limits in real time; a float is a time scale
    (60.0 makes the hour window last 60 s and the minute window 1 s, limits unchanged).
    A `limit` above max_page_size is capped to it (the page says so in `pagination.limit`); with
    oversize_limit "reject" it is refused with a 400 whose details name the maximum, with
    "timeout" answered by a 504 (an upstream that cannot produce such a page in time).
    """

    seed: int = 0
    experiments: int = 1
    rooms: int = 4
    participants: int = 3
    records: int = 200
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_limit: RateLimit = "off"
    rate_window: RateWindow = "fixed"
    faults: FaultSpec = field(default_factory=FaultSpec.none)
    max_page_size: int = 1000
    oversize_limit: OversizeLimit = "cap"
    record_us: float = 0.0
    """Server time per record returned, in microseconds (a page of n records takes n * record_us
    on top of `latency_ms`)."""
    capacity: int = 0
    """Pages the server works on at once (their per-record time); more wait their turn, so
    latency grows with the requests in flight. 0: no limit."""
    bare_pagination: bool = False
    """Data pages leave out the pagination fields the contract makes optional (`limit`,
    `returned`, `nextOffset`): only `total`, `offset` and `hasMore` remain."""
    api_key: str | None = None
    scopes: frozenset[str] = frozenset({"*"})
    media_bytes: int = 200_000
    media_url_ttl_s: float = 7 * 24 * 3600
    media_mbps: float = 0.0
    """Each media response's throughput in MB/s, like one stream from a storage host; 0 means
    as fast as loopback goes. Media responses also wait `latency_ms` before their first byte."""
    failed_recordings: float = 0.03
    """Share of recordings whose egress failed (seeded): their rows say `status` failed, with
    `downloadPath` null and no fileSize or URL, and there is no file to mint or fetch."""
    file_size_skew: int = 0
    """Added to every recording row's fileSize: a server whose fileSize disagrees with the file."""
    cache_mb: int = 256
    hostile_ids: bool = False

    def __post_init__(self) -> None:
        for name in ("experiments", "rooms", "participants", "max_page_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("records", "media_bytes", "cache_mb", "capacity"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if min(self.latency_ms, self.jitter_ms, self.media_mbps, self.record_us) < 0:
            raise ValueError("latency_ms, jitter_ms, media_mbps and record_us must be >= 0")
        if not 0 <= self.failed_recordings <= 1:
            raise ValueError("failed_recordings must be between 0 and 1")
        if self.oversize_limit not in ("cap", "reject", "timeout"):
            raise ValueError("oversize_limit must be 'cap', 'reject' or 'timeout'")
        if self.rate_limit not in ("off", "production") and not (
            isinstance(self.rate_limit, int | float) and self.rate_limit > 0
        ):
            raise ValueError("rate_limit must be 'off', 'production' or a positive time scale")
        if self.rate_window not in ("fixed", "sliding"):
            raise ValueError("rate_window must be 'fixed' or 'sliding'")
