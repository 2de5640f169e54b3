"""Budget-bound: how close the client runs to the API's rate limits without tripping them.

Run by hand: `python benchmarks/bench_budget.py [--quick] [--scale S]`.

The simulator (its own process) enforces the production limits (1000 requests per hour per key,
100 per minute per endpoint) on a clock sped up `--scale` times, once with fixed windows and
once with sliding ones; the CLI runs with --rate-limit-time-scale set to the same scale and
otherwise default limits, at a page size that makes the download need several hour-windows.

Baseline, same run: the client with its Budget swapped for plain aiolimiter token buckets
(in-process, against the sliding-window server), to show why the project does not use them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import re
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    check_ok,
    cli_command,
    experiment_totals,
    minimum_requests,
    print_block,
    run_child,
    sim_env,
)
from aiolimiter import AsyncLimiter

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.budget import BudgetCounters, PauseGate
from hyperstudy_bulk.config import load_settings
from hyperstudy_bulk.simulator import ProcessHandle, SimulatorConfig, serve_in_subprocess
from hyperstudy_bulk.simulator.config import RateWindow

HOUR_LIMIT = 1000
MINUTE_LIMIT = 100
TARGET_RATE, TARGET_429, TARGET_OVERHEAD = 0.95, 0.01, 1.02


class TokenBucketBudget:
    """The design a Budget replaces: aiolimiter buckets for the key and each endpoint, plus
    the Retry-After pause any client must honour. Like a plain bucket it ignores
    X-RateLimit-Remaining (`observe` does nothing): the buckets alone decide when to send."""

    def __init__(self, *, per_hour: int, per_minute_per_endpoint: int, time_scale: float):
        self._key = AsyncLimiter(per_hour, 3600.0 / time_scale)
        self._per_endpoint = per_minute_per_endpoint
        self._minute = 60.0 / time_scale
        self._endpoints: dict[str, AsyncLimiter] = {}
        self._gate = PauseGate()
        self.counters = BudgetCounters()

    @asynccontextmanager
    async def slot(self, endpoint: str) -> AsyncIterator[None]:
        bucket = self._endpoints.setdefault(
            endpoint, AsyncLimiter(self._per_endpoint, self._minute)
        )
        await self._gate.wait()
        await bucket.acquire()
        await self._key.acquire()
        await self._gate.wait()
        yield

    def rate_limited(self, retry_after: float) -> None:
        self.counters.rate_limited += 1
        self.pause(retry_after)

    def pause(self, seconds: float) -> None:
        self._gate.close_for(seconds)

    def observe(self, remaining: int | None, reset: float | None) -> None:
        """A token bucket has no use for the server's remaining count."""


@dataclass(frozen=True)
class Outcome:
    """One download against a rate-limited server, and what the server counted."""

    label: str
    seconds: float
    stats: dict[str, Any]
    minimum: int
    etas: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    """(elapsed s, ETA / time left) per progress line (the CLI's runs only)."""

    @property
    def accepted(self) -> int:
        return int(self.stats["by_status"].get("200", 0))

    @property
    def sent(self) -> int:
        return int(self.stats["total"])

    @property
    def rejected(self) -> int:
        return int(self.stats["by_status"].get("429", 0))


def shortest_seconds(requests: int, window: float) -> float:
    """The least time `requests` can take under a `HOUR_LIMIT` per `window` limit: the first
    window's worth at once, then one more window per further HOUR_LIMIT requests."""
    return (math.ceil(requests / HOUR_LIMIT) - 1) * window


def rows_for(outcome: Outcome, window: float) -> list[tuple[str, str]]:
    """The results lines of one outcome."""
    ideal = shortest_seconds(outcome.accepted, window)
    windows_used = outcome.seconds / window
    return [
        (f"{outcome.label}: wall time", f"{outcome.seconds:.1f} s (least possible {ideal:.0f} s)"),
        (f"{outcome.label}: rate vs allowed", f"{ideal / outcome.seconds:.1%}"),
        (
            f"{outcome.label}: requests per window",
            f"{outcome.accepted / windows_used:.0f} (limit {HOUR_LIMIT}; ideal for this N: "
            f"{outcome.accepted / max(1, math.ceil(outcome.accepted / HOUR_LIMIT) - 1):.0f})",
        ),
        (
            f"{outcome.label}: 429s",
            f"{outcome.rejected} of {outcome.sent} = {outcome.rejected / outcome.sent:.2%} "
            f"(rate_limited {outcome.stats['rate_limited']}, "
            f"during Retry-After {outcome.stats['during_retry_after']})",
        ),
        (
            f"{outcome.label}: requests vs minimum",
            f"{outcome.sent} / {outcome.minimum} = {outcome.sent / outcome.minimum:.3f}x",
        ),
        *([(f"{outcome.label}: ETA / time left", _etas(outcome.etas))] if outcome.etas else []),
    ]


def _etas(etas: list[tuple[int, float]]) -> str:
    first_half = [ratio for at, ratio in etas if at <= etas[-1][0] / 2]
    shown = ", ".join(f"{ratio:.2f} at {at} s" for at, ratio in etas)
    return f"{shown} (first half within {max(abs(1 - r) for r in first_half or [1.0]):.0%})"


LOG_LINE = re.compile(r"^\[\S+\s+(\d+)s\] .* ETA (?:(\d+):)?(\d+):(\d+)")


def eta_ratios(log: str) -> list[tuple[int, float]]:
    """(elapsed s, ETA / time actually left) for each progress line of a run's log but the
    last, the time left measured by that same log's last line."""
    points = []
    for line in log.splitlines():
        if match := LOG_LINE.match(line):
            hours, minutes, seconds = (int(g or 0) for g in match.group(2, 3, 4))
            points.append((int(match.group(1)), hours * 3600 + minutes * 60 + seconds))
    if len(points) < 2:
        return []
    end = points[-1][0]
    return [(at, eta / (end - at)) for at, eta in points[:-1] if end > at]


def cli_download(
    sim: ProcessHandle, out: Path, page_size: int, scale: float
) -> tuple[float, list[tuple[int, float]]]:
    """Wall seconds of one CLI download at default limits on the scaled clock, and how true
    the ETA of each of its progress lines was."""
    args = [
        "download",
        sim.experiment_ids[0],
        "--out",
        str(out),
        "--progress",
        "log",
        "--no-media",
        "--page-size",
        str(page_size),
        "--rate-limit-time-scale",
        str(scale),
    ]
    run = run_child(cli_command(args), sim_env(sim))
    check_ok(f"download into {out}", run)
    return run.seconds, eta_ratios(run.stderr)


async def bucket_download(sim: ProcessHandle, out: Path, page_size: int, scale: float) -> float:
    """Wall seconds of the same download in-process, the Budget swapped for token buckets."""
    settings = load_settings(
        {
            "api_key": sim.api_key,
            "base_url": sim.base_url,
            "out": str(out),
            "page_size": page_size,
            "rate_limit_time_scale": scale,
            "progress": "none",
            "media": False,
        },
        environ={},
        cwd=out.parent,
    )
    downloader = Downloader(settings)
    # ApiClient.budget is duck-typed; the swap happens before the session opens.
    downloader.api.budget = TokenBucketBudget(  # type: ignore[assignment]
        per_hour=HOUR_LIMIT, per_minute_per_endpoint=MINUTE_LIMIT, time_scale=scale
    )
    started = time.perf_counter()
    async with downloader:
        manifest = await downloader.archive(sim.experiment_ids[0])
    if not manifest.complete:
        raise SystemExit("token-bucket baseline: archive incomplete")
    return time.perf_counter() - started


def measure(config: SimulatorConfig, page_size: int, *, baseline: bool) -> list[Outcome]:
    """The CLI against this server; with `baseline`, then the token buckets against it."""
    assert isinstance(config.rate_limit, float)
    scale = config.rate_limit
    outcomes = []
    with serve_in_subprocess(config) as sim, tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        seconds, etas = cli_download(sim, root / "cli", page_size, scale)
        totals = experiment_totals(root / "cli" / sim.experiment_ids[0])
        minimum = minimum_requests(totals, page_size)
        label = f"Budget, {config.rate_window} server"
        outcomes.append(Outcome(label, seconds, sim.stats(), minimum, etas))
        if baseline:
            sim.reset()  # zero the counters and the server's windows
            seconds = asyncio.run(bucket_download(sim, root / "bucket", page_size, scale))
            label = f"aiolimiter, {config.rate_window} server"
            outcomes.append(Outcome(label, seconds, sim.stats(), minimum))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (~30 s)")
    parser.add_argument(
        "--scale", type=float, help="clock speed-up (default 120: hour = 30 s; quick 600)"
    )
    args = parser.parse_args()
    scale = args.scale or (600.0 if args.quick else 120.0)
    page_size = 100
    base = SimulatorConfig(
        seed=11,
        rooms=20 if args.quick else 24,
        participants=3,
        records=250 if args.quick else 320,
        rate_limit=scale,
    )
    window = 3600.0 / scale
    rows: list[tuple[str, str]] = [("hour window / page size", f"{window:.1f} s / {page_size}")]
    windows: tuple[tuple[RateWindow, bool], ...] = (("fixed", False), ("sliding", True))
    for rate_window, baseline in windows:
        config = dataclasses.replace(base, rate_window=rate_window)
        for outcome in measure(config, page_size, baseline=baseline):
            rows += rows_for(outcome, window)
    rows.append(
        (
            "targets",
            f"rate >= {TARGET_RATE:.0%}, 429s <= {TARGET_429:.0%}, "
            f"requests <= {TARGET_OVERHEAD}x minimum (Budget rows)",
        )
    )
    print_block(f"bench_budget (scale {scale:g})", rows)


if __name__ == "__main__":
    main()
