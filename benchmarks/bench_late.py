"""Late records: requests a `watch` cycle needs to add records stamped before the last
snapshot, against a plain `download` of the same complete archive (which refetches every
stream window whose total moved).

Run by hand: `python benchmarks/bench_late.py`.

One data type (events) at experiment granularity, pages of 20 records, streams of about 60 to
about 1,000 pages; 1 and 5 late records inserted at random places (seeded) after the first
archive. Both archives must equal the server's records afterwards. Request counts come from the
simulator's counters, so the figures do not depend on the machine's load.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.config import Settings, load_settings
from hyperstudy_bulk.manifest import load_manifest
from hyperstudy_bulk.simulator import SimulatorConfig, serve
from hyperstudy_bulk.simulator.server import SimulatorHandle
from hyperstudy_bulk.watch import Watcher

PAGE = 20


def settings(sim: SimulatorHandle, out: Path) -> Settings:
    return load_settings(
        {
            "api_key": sim.api_key,
            "base_url": sim.base_url,
            "out": str(out),
            "data_types": "events",
            "granularity": "experiment",
            "page_size": PAGE,
            "media": False,
            "rate_limit_per_hour": 10**9,
            "rate_limit_per_minute_per_endpoint": 10**9,
        },
        environ={},
        cwd=out,
    )


def archived_ids(folder: Path) -> list[str]:
    manifest = load_manifest(folder)
    return sorted(
        orjson.loads(line)["id"]
        for stream in manifest.streams
        if stream.data_type == "events"
        for file in stream.files
        for line in (folder / file.path).read_bytes().splitlines()
    )


async def trial(records: int, late: int) -> tuple[int, int, int]:
    """(pages, requests of a watch cycle, requests of a download re-check)."""
    config = SimulatorConfig(seed=31, rooms=2, participants=2, records=records)
    async with serve(config) as sim:
        exp = sim.experiment_ids[0]
        with tempfile.TemporaryDirectory() as tmp:
            watched, downloaded = Path(tmp, "watch"), Path(tmp, "download")
            for folder in (watched, downloaded):
                await asyncio.to_thread(folder.mkdir)
            snapshot = datetime.now(UTC) + timedelta(seconds=1)
            for out in (watched, downloaded):
                async with Downloader(settings(sim, out)) as downloader:
                    await downloader.archive(exp, now=snapshot)
            sim.mutate(exp, "events", insert=late)
            served = sorted(r["id"] for r in sim.dataset.records("events", "experiment", exp))

            async def no_wait(seconds: float) -> None:
                sim.reset()

            async with Downloader(settings(sim, watched)) as downloader:
                watcher = Watcher(
                    downloader.api,
                    downloader.settings,
                    exp,
                    interval=30,
                    say=lambda line: None,
                    monitor=downloader.monitor,
                    sleep=no_wait,
                    wall=lambda: snapshot,
                )
                await watcher.run(cycles=1)
            watch_requests = sim.stats()["total"]
            sim.reset()
            async with Downloader(settings(sim, downloaded)) as downloader:
                await downloader.archive(exp, now=snapshot)
            download_requests = sim.stats()["total"]
            for out in (watched, downloaded):
                assert archived_ids(out / exp) == served, out
            pages = -(-len(served) // PAGE)
            return pages, watch_requests, download_requests


async def main() -> None:
    print("| events pages | late records | watch cycle requests | download re-check requests |")
    print("|---|---|---|---|")
    for records in (250, 1000, 4000):
        for late in (1, 5):
            pages, watched, downloaded = await trial(records, late)
            print(f"| {pages:,} | {late} | {watched} | {downloaded} |")


if __name__ == "__main__":
    asyncio.run(main())
