"""Memory bound: pages fetched but not yet on disk when the disk is slower than the network.

Run by hand: `python benchmarks/bench_memory.py [--quick]`.

The simulator (in a thread) answers at once; the download runs in this process with every
writer's fsync group made to take 200 ms (a slow or contended disk), over 12 rooms of eyetracking
and continuous ratings at room granularity, at --concurrency 4, 16 and 32. A page counts from
the moment its stream hands it to the writer until its group is on disk, which is what a slow
disk makes pile up in memory. The bound to meet: about --concurrency pages in all (before issue
9.9 each stream's writer queue held --concurrency pages, about 2 x concurrency squared in all).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from _common import MB, print_block

from hyperstudy_bulk import segments
from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.config import load_settings
from hyperstudy_bulk.manifest import Checkpoint
from hyperstudy_bulk.simulator import SimulatorConfig, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle

FSYNC_GROUP_SECONDS = 0.2


class Held:
    """Pages (and their bytes) handed to a writer and not yet on disk: now and at the peak."""

    def __init__(self) -> None:
        self.pages = self.bytes = self.peak_pages = self.peak_bytes = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def instrument(self) -> None:
        put, persist = segments._GroupWriter.put, segments._GroupWriter._persist
        held = self

        async def counted_put(
            writer: segments._GroupWriter, data: bytes, records: int, state: Checkpoint
        ) -> None:
            held.pages += 1
            held.bytes += len(data)
            held.peak_pages = max(held.peak_pages, held.pages)
            held.peak_bytes = max(held.peak_bytes, held.bytes)
            await put(writer, data, records, state)

        def slow_persist(
            writer: segments._GroupWriter, pages: list[tuple[bytes, int, Checkpoint]]
        ) -> None:
            time.sleep(FSYNC_GROUP_SECONDS)
            persist(writer, pages)
            held.pages -= len(pages)
            held.bytes -= sum(len(page[0]) for page in pages)

        segments._GroupWriter.put = counted_put  # type: ignore[method-assign]
        segments._GroupWriter._persist = slow_persist  # type: ignore[method-assign]


async def download(sim: SimulatorHandle, out: Path, concurrency: int) -> bool:
    settings = load_settings(
        {
            "api_key": sim.api_key,
            "base_url": sim.base_url,
            "out": str(out),
            "concurrency": concurrency,
            "granularity": "room",
            "page_size": 100,
            "media": False,
            "data_types": "eyetracking,ratings-continuous",
            "rate_limit_per_hour": 10**9,
            "rate_limit_per_minute_per_endpoint": 10**9,
        },
        environ={},
        cwd=out.parent,
    )
    async with Downloader(settings) as downloader:
        manifest = await downloader.archive(sim.experiment_ids[0])
    return manifest.complete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="concurrency 4 and 16 only")
    args = parser.parse_args()
    levels = [4, 16] if args.quick else [4, 16, 32]
    config = SimulatorConfig(seed=3, rooms=12, records=400)
    rows: list[tuple[str, str]] = []
    held = Held()
    held.instrument()
    with serve_in_thread(config) as sim, tempfile.TemporaryDirectory() as scratch:
        for concurrency in levels:
            held.reset()
            out = Path(scratch) / f"c{concurrency}"
            complete = asyncio.run(download(sim, out, concurrency))
            if not complete:
                raise SystemExit(f"the download at --concurrency {concurrency} is incomplete")
            rows.append(
                (
                    f"--concurrency {concurrency}",
                    f"peak {held.peak_pages} pages ({held.peak_bytes / MB:.1f} MB) not yet on "
                    f"disk = {held.peak_pages / concurrency:.1f} x concurrency",
                )
            )
    print_block(
        f"bench_memory (12 rooms, {FSYNC_GROUP_SECONDS * 1000:.0f} ms per fsync group)",
        [*rows, ("bound", "about concurrency pages in all: its slots + one waiting per stream")],
    )


if __name__ == "__main__":
    main()
