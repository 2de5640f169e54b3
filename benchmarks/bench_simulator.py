"""Throughput of the simulator in its own process: pages of 1000 events per second.

Run by hand: `python benchmarks/bench_simulator.py [--pages N] [--concurrency C]`.
The first pass (cold) generates every page; the second (warm) is served from the page cache.
The client reads and parses every body, as a real archiver would.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
import orjson

from hyperstudy_bulk.simulator import SimulatorConfig, serve_in_subprocess

PAGE = 1000


async def fetch_pass(
    session: aiohttp.ClientSession, url: str, pages: int, concurrency: int
) -> tuple[float, int]:
    """Fetch offsets 0, 1000, ... with `concurrency` workers; (seconds, bytes)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(pages):
        queue.put_nowait(n * PAGE)
    received = 0

    async def worker() -> None:
        nonlocal received
        while not queue.empty():
            offset = queue.get_nowait()
            async with session.get(url, params={"limit": PAGE, "offset": offset}) as response:
                body = await response.read()
            assert response.status == 200, response.status
            assert len(orjson.loads(body)["data"]) == PAGE
            received += len(body)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return time.perf_counter() - start, received


async def run(pages: int, concurrency: int) -> None:
    # Enough events for `pages` distinct pages: records is per participant per room.
    config = SimulatorConfig(seed=1, rooms=8, participants=4, records=pages * PAGE // 16)
    with serve_in_subprocess(config) as sim:
        url = f"{sim.base_url}/data/events/experiment/{sim.experiment_ids[0]}"
        connector = aiohttp.TCPConnector(limit=concurrency)
        headers = {"X-API-Key": sim.api_key}
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            for label in ("cold", "warm"):
                seconds, size = await fetch_pass(session, url, pages, concurrency)
                print(
                    f"{label}: {pages} pages x {PAGE} events in {seconds:.2f} s = "
                    f"{pages / seconds:.0f} pages/s, {size / seconds / 1e6:.1f} MB/s"
                )
        stats = sim.stats()
        print(f"server counted {stats['total']} requests: {stats['by_status']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(run(args.pages, args.concurrency))


if __name__ == "__main__":
    main()
