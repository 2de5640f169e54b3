"""Resume cost: extra requests of a run killed (SIGKILL) at a random moment and run again,
against one uninterrupted run of the same download.

Run by hand: `python benchmarks/bench_resume.py [--quick] [--kills N]`.

The simulator (its own process) answers after 20 ms; the CLI runs at --concurrency 4 and
--granularity room, so several streams are in flight at any moment. Each trial starts a fresh
archive, kills the CLI at a moment drawn (seeded) from the first 10-90% of an uninterrupted
run's duration, runs the same command to completion, and counts the requests the simulator
served for the two runs together. What a kill may cost is the pages that were in flight or
fetched but not yet on disk: at most --concurrency requests in flight (each stream a fair share
of them), and at most --concurrency pages waiting for the disk in all. The archive must be exact
every time (verify).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import cli_command, print_block, run_child, sim_env, unlimited_download

from hyperstudy_bulk.simulator import ProcessHandle, SimulatorConfig, serve_in_subprocess

CONCURRENCY = 4
OPTIONS = ("--no-media", "--granularity", "room", "--concurrency", str(CONCURRENCY))


def download_args(sim: ProcessHandle, out: Path) -> list[str]:
    return unlimited_download(sim.experiment_ids[0], out, *OPTIONS, "--page-size", "200")


def requests_served(sim: ProcessHandle) -> int:
    total: int = sim.stats()["total"]
    return total


def killed_then_resumed(sim: ProcessHandle, out: Path, delay: float) -> tuple[int, bool]:
    """Requests of a run killed after `delay` seconds plus its resumption, and whether the kill
    landed before the run finished."""
    sim.reset()
    command = cli_command(download_args(sim, out))
    process = subprocess.Popen(
        command, env=sim_env(sim), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        process.wait(timeout=delay)
        landed = False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        landed = True
    resumed = run_child(command, sim_env(sim))
    if resumed.returncode != 0:
        raise SystemExit(f"resumed run exited {resumed.returncode}: {resumed.stderr[-500:]}")
    verify = run_child(cli_command(["verify", str(out / sim.experiment_ids[0])]), sim_env(sim))
    if verify.returncode != 0:
        raise SystemExit(f"the resumed archive is not whole: {verify.stderr[-500:]}")
    return requests_served(sim), landed


def run(config: SimulatorConfig, kills: int) -> None:
    chooser = random.Random(2026)
    with serve_in_subprocess(config) as sim, tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        run_child(cli_command(download_args(sim, root / "warm")), sim_env(sim))
        sim.reset()
        started = time.perf_counter()
        clean = run_child(cli_command(download_args(sim, root / "clean")), sim_env(sim))
        duration = time.perf_counter() - started
        baseline = requests_served(sim)
        extras: list[int] = []
        for trial in range(kills):
            delay = chooser.uniform(0.1, 0.9) * duration
            served, landed = killed_then_resumed(sim, root / f"trial-{trial}", delay)
            if landed:
                extras.append(served - baseline)
    print_block(
        f"bench_resume ({config.rooms} rooms, --concurrency {CONCURRENCY}, granularity room)",
        [
            ("uninterrupted run", f"{baseline:,} requests in {clean.seconds:.2f} s"),
            ("kills that landed mid-run", f"{len(extras)} of {kills}"),
            (
                "extra requests per kill",
                f"median {statistics.median(extras):.0f}, max {max(extras)}",
            ),
            (
                "bound: in flight or not yet on disk",
                f"<= {CONCURRENCY} in flight, + <= {CONCURRENCY} pages waiting for the disk",
            ),
            ("archives exact after resume", "yes (verify passed every time)"),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few kills on a small experiment")
    parser.add_argument("--kills", type=int, default=None)
    args = parser.parse_args()
    config = SimulatorConfig(
        seed=17, rooms=4 if args.quick else 8, records=150 if args.quick else 300, latency_ms=20
    )
    run(config, args.kills or (4 if args.quick else 20))


if __name__ == "__main__":
    main()
