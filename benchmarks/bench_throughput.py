"""Throughput without tuning: page size auto under the budget, adaptive concurrency under load.

Run by hand: `python benchmarks/bench_throughput.py [--quick] [--scale S]`.

Part 1, budget-bound. The simulator (its own process) enforces the production limits (1000
requests per hour per key, 100 per minute per endpoint) on a clock sped up `--scale` times. Three
servers: one granting pages of 10,000, one capping them at 1000 (the documented default), one
refusing a limit above 1000 with a 400 naming the maximum. Against each, side by side, the CLI
with no tuning flag (page size auto) and with `--page-size 1000` (what it asked before auto):
requests, records per request, and records per hour of budget (records per request x 1000).

Part 2, a server that slows down under load. It works on `CAPACITY` pages at once (80 us per
record each) and queues the rest, so latency grows with the requests in flight and records per
second stop growing once `CAPACITY` are in flight. The CLI at fixed --concurrency 4, 8, 16, 32,
64 and at auto (no flag), budget lifted: records per second, timeouts, and the limit auto ended
at (the manifest's `in_flight_limit`).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from _common import (
    archive_records,
    check_ok,
    cli_command,
    load_manifest,
    print_block,
    run_child,
    sim_env,
    unlimited_download,
)

from hyperstudy_bulk.simulator import ProcessHandle, SimulatorConfig, serve_in_subprocess

TARGET_RECORDS_PER_REQUEST = 8.0
CAPACITY = 8
FIXED_CONCURRENCY = (4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Crawl:
    label: str
    seconds: float
    requests: int
    refused: int
    records: int
    manifest: dict[str, Any]

    @property
    def per_request(self) -> float:
        return self.records / max(1, self.requests)


def crawl(sim: ProcessHandle, out: Path, label: str, args: list[str]) -> Crawl:
    """One CLI download into `out`, with the simulator's counters for it alone."""
    sim.reset()
    run = run_child(cli_command(args), sim_env(sim))
    check_ok(label, run)
    stats = sim.stats()
    folder = out / sim.experiment_ids[0]
    return Crawl(
        label,
        run.seconds,
        stats["total"],
        stats["by_status"].get("400", 0),
        archive_records(folder),
        load_manifest(folder),
    )


def _scaled(sim: ProcessHandle, out: Path, scale: float, *extra: str) -> list[str]:
    """`download` at the production limits on the simulator's scaled clock."""
    return [
        *("download", sim.experiment_ids[0], "--out", str(out), "--progress", "none"),
        *("--no-media", "--rate-limit-time-scale", str(scale), *extra),
    ]


def budget_part(base: SimulatorConfig, scale: float) -> list[tuple[str, str]]:
    servers = (
        ("grants 10,000", replace(base, max_page_size=10_000)),
        ("caps at 1000", replace(base, max_page_size=1000)),
        ("refuses > 1000", replace(base, max_page_size=1000, oversize_limit="reject")),
    )
    rows: list[tuple[str, str]] = []
    for name, config in servers:
        with serve_in_subprocess(config) as sim, tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            auto = crawl(sim, root / "auto", "auto", _scaled(sim, root / "auto", scale))
            fixed = crawl(
                sim,
                root / "fixed",
                "1000",
                _scaled(sim, root / "fixed", scale, "--page-size", "1000"),
            )
        assert auto.records == fixed.records, (name, auto.records, fixed.records)
        types = len(auto.manifest["page_sizes"])
        rows += [
            (
                f"server {name}: requests auto / fixed 1000",
                f"{auto.requests:,} / {fixed.requests:,} "
                f"({auto.requests - fixed.requests:+d}; {types} data types; "
                f"{auto.refused} refused)",
            ),
            (
                f"server {name}: records per request",
                f"auto {auto.per_request:,.0f} / fixed {fixed.per_request:,.0f} = "
                f"{auto.per_request / fixed.per_request:.2f}x",
            ),
            (
                f"server {name}: records per hour of budget",
                f"auto {auto.per_request * 1000:,.0f} / fixed {fixed.per_request * 1000:,.0f}",
            ),
            (
                f"server {name}: wall (scaled clock)",
                f"auto {auto.seconds:.1f} s / fixed {fixed.seconds:.1f} s",
            ),
        ]
    return rows


def load_part(config: SimulatorConfig) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with serve_in_subprocess(config) as sim, tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        exp = sim.experiment_ids[0]
        warm = ["--no-media", "--timeout", "30"]
        crawl(sim, root / "warm", "warm", unlimited_download(exp, root / "warm", *warm))
        runs = [
            crawl(
                sim,
                root / f"c{n}",
                f"--concurrency {n}",
                unlimited_download(exp, root / f"c{n}", *warm, "--concurrency", str(n)),
            )
            for n in FIXED_CONCURRENCY
        ]
        runs.append(
            crawl(sim, root / "auto", "auto", unlimited_download(exp, root / "auto", *warm))
        )
    best = max(run.records / run.seconds for run in runs[:-1])
    for run in runs:
        timeouts = run.manifest["requests"]["retries"].get("timeout", 0)
        rate = run.records / run.seconds
        limit = run.manifest["requests"].get("in_flight_limit")
        rows.append(
            (
                f"load: {run.label}",
                f"{rate:,.0f} records/s ({rate / best:.0%} of the best fixed), "
                f"{run.seconds:.2f} s, {timeouts} timeouts, limit at the end {limit}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--scale", type=float, default=240.0, help="clock speed-up (hour = 15 s)")
    args = parser.parse_args()
    budget = SimulatorConfig(
        seed=7,
        rooms=8 if args.quick else 24,
        participants=2 if args.quick else 4,
        records=100 if args.quick else 1000,
        latency_ms=30.0,
        rate_limit=args.scale,
    )
    load = SimulatorConfig(
        seed=7,
        rooms=6 if args.quick else 12,
        participants=2 if args.quick else 4,
        records=100 if args.quick else 300,
        latency_ms=30.0,
        record_us=80.0,
        capacity=CAPACITY,
    )
    rows = budget_part(budget, args.scale)
    rows += load_part(load)
    rows.append(("target", f">= {TARGET_RECORDS_PER_REQUEST:.0f}x records per request"))
    print_block("bench_throughput", rows)


if __name__ == "__main__":
    main()
