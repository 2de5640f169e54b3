"""Shards of one job under one key: one process vs 2 and 4 shards started at once.

Run by hand: `python benchmarks/bench_shards.py [--quick] [--scale S]`.

The simulator (its own process) enforces the production limits (1000 requests per hour per
key, 100 per minute per endpoint, sliding windows) on a clock sped up `--scale` times, and
serves an uneven experiment (eye-tracking and continuous ratings hold most records, some rooms
have none). The job needs several hour windows at pages of 5. Each configuration starts
from a fresh --out and a reset server; the shards are started together, each with the key's
full limits (the ledger in --out shares them), and merged when all are done.

Reported per configuration: wall time (the last shard's end, merge included) and its ratio to
one process, requests the server saw and their ratio to one process, and 429s. Targets:
wall <= 1.25x, requests <= 1.1x, no 429.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import cli_command, print_block, read_stream_records, sim_env

from hyperstudy_bulk.simulator import ProcessHandle, SimulatorConfig, serve_in_subprocess

TARGET_WALL, TARGET_REQUESTS = 1.25, 1.1
PAGE_SIZE = 5


@dataclass(frozen=True)
class Timing:
    wall: float
    """Start to the last shard's end, merge included."""
    ends: list[float]
    """Seconds from the start at which each process ended, soonest first."""
    merge: float


def run_job(sim: ProcessHandle, out: Path, shards: int, scale: float) -> Timing:
    """The job as `shards` processes started at once (1: a plain download)."""
    base = [
        "download",
        sim.experiment_ids[0],
        *("--out", str(out), "--page-size", str(PAGE_SIZE), "--no-media", "--progress", "none"),
        *("--rate-limit-time-scale", str(scale)),
    ]
    commands = (
        [base]
        if shards == 1
        else [[*base, "--shard", f"{k}/{shards}"] for k in range(1, shards + 1)]
    )
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            cli_command(c), env=sim_env(sim), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for c in commands
    ]
    ends: list[float] = []
    running = list(processes)
    while running:  # each end as it happens (the tail shows balance; polling costs nothing)
        for process in [p for p in running if p.poll() is not None]:
            running.remove(process)
            ends.append(time.perf_counter() - started)
            if process.returncode != 0:
                err = process.stderr.read().decode() if process.stderr else ""
                raise SystemExit(f"{shards} shard(s): exit {process.returncode}\n{err[-2000:]}")
        time.sleep(0.02)
    folder = out / sim.experiment_ids[0]
    if shards > 1:
        merge = subprocess.run(cli_command(["merge", str(folder)]), capture_output=True)
        if merge.returncode != 0:
            raise SystemExit(f"merge failed: {merge.stderr.decode()}")
    seconds = time.perf_counter() - started
    verify = subprocess.run(cli_command(["verify", str(folder)]), capture_output=True)
    if verify.returncode != 0:
        raise SystemExit(f"{shards} shard(s): verify failed\n{verify.stdout.decode()[-2000:]}")
    return Timing(seconds, ends, seconds - ends[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller job (~1 minute)")
    parser.add_argument("--scale", type=float, default=240.0, help="clock speed-up (hour = 15 s)")
    args = parser.parse_args()
    config = SimulatorConfig(
        seed=5,
        rooms=6,
        participants=2,
        records=40 if args.quick else 80,
        rate_limit=args.scale,
        rate_window="sliding",
    )
    rows: list[tuple[str, str]] = [
        ("hour window / page size", f"{3600 / args.scale:.1f} s / {PAGE_SIZE}")
    ]
    with serve_in_subprocess(config) as sim, tempfile.TemporaryDirectory() as scratch:
        baseline: tuple[float, int] | None = None
        reference: list[str] | None = None
        for shards in (1, 2, 4):
            sim.reset()
            out = Path(scratch) / f"shards-{shards}"
            timing = run_job(sim, out, shards, args.scale)
            seconds = timing.wall
            stats = sim.stats()
            sent, rejected = int(stats["total"]), int(stats["by_status"].get("429", 0))
            records = sorted(
                map(repr, read_stream_records(out / sim.experiment_ids[0], "eyetracking"))
            )
            if reference is None:
                reference = records
            elif records != reference:
                raise SystemExit(f"{shards} shards: eye-tracking records differ from one process")
            if baseline is None:
                baseline = (seconds, sent)
            label = "1 process" if shards == 1 else f"{shards} shards"
            rows += [
                (f"{label}: wall", f"{seconds:.1f} s = {seconds / baseline[0]:.2f}x one process"),
                (f"{label}: requests", f"{sent} = {sent / baseline[1]:.3f}x one process"),
                (f"{label}: 429s", str(rejected)),
            ]
            if shards > 1:
                ends = ", ".join(f"{end:.1f}" for end in timing.ends)
                rows.append((f"{label}: ended at (s)", f"{ends}; merge {timing.merge:.1f} s"))
    rows.append(("targets", f"wall <= {TARGET_WALL}x, requests <= {TARGET_REQUESTS}x, 429s = 0"))
    print_block(f"bench_shards (scale {args.scale:g}, sliding server windows)", rows)


if __name__ == "__main__":
    main()
