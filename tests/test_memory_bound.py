"""Pages fetched but not yet on disk are bounded by --concurrency in all, however slow the disk
and however many streams run (not --concurrency per stream)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import settings_for

from hyperstudy_bulk import segments
from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.manifest import Checkpoint
from hyperstudy_bulk.simulator import SimulatorConfig, serve

CONCURRENCY = 6


async def test_a_slow_disk_holds_about_concurrency_pages_whatever_the_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = peak = 0
    put, persist = segments._GroupWriter.put, segments._GroupWriter._persist

    async def counted_put(
        self: segments._GroupWriter, data: bytes, records: int, state: Checkpoint
    ) -> None:
        nonlocal waiting, peak
        waiting += 1  # the page is in memory from here until it is on disk
        peak = max(peak, waiting)
        await put(self, data, records, state)

    def slow_persist(
        self: segments._GroupWriter, pages: list[tuple[bytes, int, Checkpoint]]
    ) -> None:
        nonlocal waiting
        time.sleep(0.05)  # a disk that takes 50 ms per fsync group
        persist(self, pages)
        waiting -= len(pages)

    monkeypatch.setattr(segments._GroupWriter, "put", counted_put)
    monkeypatch.setattr(segments._GroupWriter, "_persist", slow_persist)
    async with serve(SimulatorConfig(seed=3, rooms=12, records=100)) as sim:
        settings = settings_for(
            sim,
            tmp_path,
            concurrency=CONCURRENCY,
            granularity="room",
            page_size=50,
            data_types="eyetracking",
            media=False,
        )
        async with Downloader(settings) as downloader:
            manifest = await downloader.archive(sim.experiment_ids[0])
    assert manifest.complete
    assert sum(s.pages for s in manifest.streams) > 10 * CONCURRENCY
    # `concurrency` pages queued for the disk, and at most one more per stream waiting to queue
    assert peak <= 2 * CONCURRENCY
