"""CPU-bound: what the client spends per record when neither network nor budget binds.

Run by hand: `python benchmarks/bench_cpu.py [--quick]`.

The simulator (its own process) answers at once with no rate limit; the CLI runs as a child
with limits so high the budget never waits, and its CPU seconds (user + sys) and peak RSS come
from wait4. It is run at 1x and 10x the data: peak RSS should stay flat.

Baseline, same run: the same pages' bytes fetched once into this process, then a timed loop of
orjson.loads + orjson.dumps(record, OPT_APPEND_NEWLINE) per record, the least any archiver
that re-encodes records must spend. The client's throughput is shown as a fraction of it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from _common import (
    MB,
    ChildRun,
    archive_bytes,
    archive_records,
    check_ok,
    cli_command,
    load_manifest,
    print_block,
    run_child,
    sim_env,
    unlimited_download,
)

from hyperstudy_bulk.datatypes import data_type_named
from hyperstudy_bulk.simulator import ProcessHandle, SimulatorConfig, serve_in_subprocess

RSS_TARGET_MB = 200.0
PAGE_SIZE = 1000


@dataclass(frozen=True)
class Scale:
    """One CLI download: its child-process costs and the archive it wrote."""

    factor: int
    run: ChildRun
    records: int
    archive_mb: float

    def records_per_cpu_second(self, startup: float) -> float:
        """Net of `startup`, the CPU the interpreter and imports cost whatever the data."""
        return self.records / (self.run.cpu_seconds - startup)


def cli_download(sim: ProcessHandle, out: Path) -> ChildRun:
    args = unlimited_download(sim.experiment_ids[0], out, "--no-media")
    run = run_child(cli_command(args), sim_env(sim))
    check_ok(f"download into {out}", run)
    return run


async def fetch_pages(sim: ProcessHandle, folder: Path) -> list[bytes]:
    """The raw bodies of every page the archive holds, fetched with the manifest's params."""
    headers = {"X-API-Key": sim.api_key}
    bodies: list[bytes] = []
    async with aiohttp.ClientSession(headers=headers) as session:
        for stream in load_manifest(folder)["streams"]:
            path = data_type_named(stream["data_type"]).path
            url = f"{sim.base_url}/data/{path}/experiment/{stream['scope_id']}"
            for offset in range(0, max(1, stream["server_total"]), PAGE_SIZE):
                params = {**stream["params"], "offset": offset, "limit": PAGE_SIZE}
                async with session.get(url, params=params) as response:
                    bodies.append(await response.read())
    return bodies


def decode_encode_bound(bodies: list[bytes]) -> tuple[int, float]:
    """(records, CPU seconds) of decoding each page and re-encoding each record as NDJSON."""
    records = 0
    started = time.process_time()
    for body in bodies:
        for record in orjson.loads(body)["data"]:
            orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
            records += 1
    return records, time.process_time() - started


def run(config: SimulatorConfig, factors: tuple[int, ...]) -> None:
    scales: list[Scale] = []
    bound_rate = 0.0
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for factor in factors:
            sized = SimulatorConfig(
                seed=config.seed,
                rooms=config.rooms * factor,
                participants=config.participants,
                records=config.records,
            )
            with serve_in_subprocess(sized) as sim:
                out = root / f"x{factor}"
                child = cli_download(sim, out)
                folder = out / sim.experiment_ids[0]
                mb = archive_bytes(folder) / MB
                scales.append(Scale(factor, child, archive_records(folder), mb))
                if factor == factors[0]:
                    bodies = asyncio.run(fetch_pages(sim, folder))
                    records, seconds = decode_encode_bound(bodies)
                    bound_rate = records / seconds
    startup = run_child(cli_command(["--version"]), os.environ).cpu_seconds
    rows = [
        ("decode+re-encode bound", f"{bound_rate:,.0f} records/CPU-s (1x pages)"),
        ("CLI startup (--version)", f"{startup:.2f} CPU-s"),
    ]
    for scale in scales:
        name = f"{scale.factor}x"
        rows += [
            (f"{name}: archive", f"{scale.records:,} records, {scale.archive_mb:.1f} MB"),
            (
                f"{name}: client CPU",
                f"{scale.run.cpu_seconds:.2f} s (wall {scale.run.seconds:.2f} s), "
                f"{scale.archive_mb / scale.run.cpu_seconds:.1f} MB/CPU-s",
            ),
            (
                f"{name}: throughput",
                f"{scale.records / scale.run.cpu_seconds:,.0f} records/CPU-s; net of startup "
                f"{scale.records_per_cpu_second(startup):,.0f} = "
                f"{scale.records_per_cpu_second(startup) / bound_rate:.0%} of the bound",
            ),
            (f"{name}: peak RSS", f"{scale.run.max_rss_mb:.0f} MB (target < {RSS_TARGET_MB:.0f})"),
        ]
    print_block("bench_cpu (no latency, no rate limit)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (~15 s)")
    args = parser.parse_args()
    config = SimulatorConfig(seed=3, rooms=4, participants=3, records=100 if args.quick else 1000)
    run(config, (1, 10))


if __name__ == "__main__":
    main()
