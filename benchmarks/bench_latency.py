"""Latency-bound: the official SDK (sequential pages) vs `hyperstudy-bulk download`.

Run by hand: `python benchmarks/bench_latency.py [--quick] [--literal-defaults]
[--max-page-size N] [--record-us US]`.

The simulator (its own process) answers every request after 30 ms plus 80 us of server time
per record served, with no rate limit, so the CLI runs with its budget lifted too. It caps pages
at `--max-page-size` (1000 by default, the documented default; 10000 is a server granting
large pages). One untimed CLI pass warms the page cache; then the CLI is
timed (median of REPEATS) in each of CONFIGURATIONS, and the SDK fetches every data type with
one get_* call each. Each data type's NDJSON records, read back from the archive, must equal the
SDK's list of dicts, in order.

Both sides are served from the simulator's warm page cache (keyed on the records a query
matches, so the CLI's snapshot-bounded queries and the SDK's unbounded ones share pages); the
first, untimed CLI run pays the page generation and is reported as the cold figure. The CLI runs
with --no-media: the SDK calls fetch records, not the recordings' files.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    ChildRun,
    check_ok,
    cli_command,
    load_manifest,
    print_block,
    read_stream_records,
    run_child,
    sim_env,
)
from hyperstudy import HyperStudy  # type: ignore[import-untyped]

from hyperstudy_bulk.plan import RequestBudget, estimate_seconds
from hyperstudy_bulk.simulator import ProcessHandle, SimulatorConfig, serve_in_subprocess

LATENCY_MS = 30.0
RECORD_US = 80.0
REPEATS = 5
TARGET = 20.0
UNLIMITED = [
    *("--rate-limit-per-hour", str(10**9)),
    *("--rate-limit-per-minute-per-endpoint", str(10**9)),
]
"""The simulator enforces no limit here (nor does the SDK), so neither does the timed CLI: its
default budget (production's 100/minute per endpoint) would make this a budget benchmark."""


@dataclass(frozen=True)
class SdkCall:
    """One SDK call fetching one whole data type at experiment scope."""

    folder: str
    fetch: Callable[[HyperStudy, str], list[dict[str, Any]]]


def _call(method: str, **fixed: Any) -> Callable[[HyperStudy, str], Any]:
    """hs.<method>(experiment) for every record, as a user of the SDK would call it."""
    return lambda hs, experiment: getattr(hs, method)(
        experiment, output="dict", progress=False, **fixed
    )


SDK_CALLS = (
    SdkCall("events", _call("get_events")),
    SdkCall("recordings", _call("get_recordings")),
    SdkCall("chat", _call("get_chat")),
    SdkCall("videochat", _call("get_videochat")),
    SdkCall("ratings-continuous", _call("get_ratings", kind="continuous")),
    SdkCall("ratings-sparse", _call("get_ratings", kind="sparse")),
    SdkCall("sync", _call("get_sync")),
    SdkCall("components", _call("get_components")),
    SdkCall("eyetracking", _call("get_eyetracking")),
    SdkCall("participants", _call("get_participants")),
    SdkCall("rooms", _call("get_rooms")),
)


def download(sim: ProcessHandle, out: Path, *, options: list[str]) -> ChildRun:
    """One CLI download of the simulator's first experiment's records into `out`."""
    args = [
        *("download", sim.experiment_ids[0], "--out", str(out)),
        *("--progress", "none", "--no-media", *options),
    ]
    run = run_child(cli_command(args), sim_env(sim))
    check_ok(f"download into {out}", run)
    return run


def budget_floor(folder: Path) -> float:
    """Least seconds the CLI's default budget (1000/hour, 100/minute per endpoint) allows for
    the requests this archive took: what a run at literal default settings must last."""
    per_endpoint: dict[str, int] = {}
    for stream in load_manifest(folder)["streams"]:
        per_endpoint[stream["data_type"]] = per_endpoint.get(stream["data_type"], 0) + int(
            stream["requests"]
        )
    return estimate_seconds(per_endpoint, RequestBudget(per_hour=1000, per_minute_per_endpoint=100))


def sdk_pass(sim: ProcessHandle, folder: Path) -> tuple[float, int, list[str]]:
    """Time each SDK call (only the call), then compare its result with the archive.

    Returns (seconds, records, data types whose records differ).
    """
    # The simulator warns, as the API does, about missing indexes; the SDK re-raises that as
    # a UserWarning per page, which is noise here.
    warnings.filterwarnings("ignore", category=UserWarning, module="hyperstudy")
    hs = HyperStudy(api_key=sim.api_key, base_url=sim.base_url)
    experiment = sim.experiment_ids[0]
    seconds, records, mismatched = 0.0, 0, []
    for call in SDK_CALLS:
        started = time.perf_counter()
        rows = call.fetch(hs, experiment)
        seconds += time.perf_counter() - started
        records += len(rows)
        if rows != read_stream_records(folder, call.folder):
            mismatched.append(call.folder)
    return seconds, records, mismatched


def timed(sim: ProcessHandle, root: Path, label: str, options: list[str]) -> float:
    """Median wall seconds of REPEATS downloads into fresh folders. Dirty pages of the previous
    run are flushed first (os.sync), so a run does not pay for its predecessor's writeback; the
    run's own writes and fsyncs count, as they must for an archive (the SDK writes nothing)."""
    seconds = []
    for attempt in range(REPEATS):
        os.sync()
        seconds.append(download(sim, root / f"{label}-{attempt}", options=options).seconds)
    return statistics.median(seconds)


CONFIGURATIONS: tuple[tuple[str, list[str]], ...] = (
    ("no tuning flag (concurrency and page size auto)", []),
    (
        "old defaults --concurrency 16 --page-size 1000",
        ["--concurrency", "16", "--page-size", "1000"],
    ),
    ("--concurrency 64", ["--concurrency", "64"]),
)
"""The defaults a new user gets, the fixed defaults before auto, and the most requests in flight
auto allows, fixed. The SDK's page size is fixed at 1000."""


def run(config: SimulatorConfig, *, literal_defaults: bool) -> None:
    with serve_in_subprocess(config) as sim, tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        cold = download(sim, root / "cold", options=UNLIMITED)
        timings = [
            (label, timed(sim, root, f"run{i}", [*options, *UNLIMITED]))
            for i, (label, options) in enumerate(CONFIGURATIONS)
        ]
        folder = root / "run0-0" / sim.experiment_ids[0]
        sim.reset()
        sdk_seconds, records, mismatched = sdk_pass(sim, folder)
        requests = sim.stats()["total"]
        floor = budget_floor(folder)
        literal = (
            f"{download(sim, root / 'literal', options=[]).seconds:.2f} s"
            if literal_defaults
            else "not run (--literal-defaults)"
        )
    rows = [
        ("records / SDK requests", f"{records:,} / {requests:,}"),
        ("SDK, 11 get_* calls", f"{sdk_seconds:.2f} s"),
    ]
    for label, seconds in timings:
        rows.append(
            (
                f"CLI {label}",
                f"{seconds:.2f} s (median of {REPEATS}): {sdk_seconds / seconds:.1f}x",
            )
        )
    rows += [
        ("CLI first run (simulator generates pages)", f"{cold.seconds:.2f} s"),
        ("CLI literal defaults (budget-bound)", f"{literal}; floor {floor:.0f} s"),
        ("target", f">= {TARGET:.0f}x"),
        ("records identical", "yes" if not mismatched else f"NO: {', '.join(mismatched)}"),
    ]
    title = (
        f"bench_latency ({config.rooms} rooms, {LATENCY_MS:.0f} ms per request + "
        f"{config.record_us:.0f} us per record, pages of up to {config.max_page_size})"
    )
    print_block(title, rows)
    if mismatched:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (~10 s)")
    parser.add_argument(
        "--literal-defaults",
        action="store_true",
        help="also time the CLI at its default production budget (minutes: see the floor)",
    )
    parser.add_argument("--max-page-size", type=int, default=1000, help="the server's page cap")
    parser.add_argument("--record-us", type=float, default=RECORD_US, help="server us per record")
    args = parser.parse_args()
    config = SimulatorConfig(
        seed=7,
        rooms=20 if args.quick else 24,
        participants=2 if args.quick else 4,
        records=60 if args.quick else 400,
        latency_ms=LATENCY_MS,
        record_us=args.record_us,
        max_page_size=args.max_page_size,
    )
    run(config, literal_defaults=args.literal_defaults)


if __name__ == "__main__":
    main()
