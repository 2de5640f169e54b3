"""End to end against the simulator on loopback: every record of every data type, exactly as
served, with a manifest that tells the truth."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import (
    DATA_TYPE_PATHS,
    archive_folder,
    expected_type,
    manifest_of,
    read_type,
    settings_for,
)

from hyperstudy_bulk.api import Downloader, download
from hyperstudy_bulk.datatypes import data_type_named
from hyperstudy_bulk.simulator import FaultSpec, SimulatorConfig, serve
from hyperstudy_bulk.simulator.server import SimulatorHandle


def _key(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


async def _archive(sim: SimulatorHandle, out: Path, **options: object) -> None:
    async with Downloader(settings_for(sim, out, **options)) as downloader:
        await downloader.archive(sim.experiment_ids[0])


async def test_experiment_scope_archive_is_identical_and_in_order(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    exp = sim.experiment_ids[0]
    await _archive(sim, tmp_path, granularity="experiment", page_size=97)
    folder = archive_folder(tmp_path, exp)
    for path in DATA_TYPE_PATHS:
        assert read_type(folder, data_type_named(path).folder) == expected_type(sim, path, exp), (
            path
        )
    manifest = manifest_of(tmp_path, exp)
    assert manifest.complete
    assert manifest.granularity == "experiment"


@pytest.mark.parametrize("granularity", ["room", "participant"])
async def test_finer_granularities_hold_the_same_records(
    sim: SimulatorHandle, tmp_path: Path, granularity: str
) -> None:
    exp = sim.experiment_ids[0]
    await _archive(sim, tmp_path, granularity=granularity, page_size=150)
    folder = archive_folder(tmp_path, exp)
    for path in DATA_TYPE_PATHS:
        got = sorted(map(_key, read_type(folder, data_type_named(path).folder)))
        assert got == sorted(map(_key, expected_type(sim, path, exp))), path
    manifest = manifest_of(tmp_path, exp)
    assert manifest.complete
    assert manifest.granularity == granularity
    for stream in manifest.streams:
        if stream.scope == "room":
            served = sim.dataset.records(
                stream.data_type.replace("ratings-", "ratings/"), "room", stream.scope_id
            )
            assert read_stream(folder, stream.files) == served


def read_stream(folder: Path, files: list[Any]) -> list[dict[str, Any]]:
    return [
        orjson.loads(line) for f in files for line in (folder / f.path).read_bytes().splitlines()
    ]


async def test_manifest_matches_the_files_on_disk(sim: SimulatorHandle, tmp_path: Path) -> None:
    exp = sim.experiment_ids[0]
    await _archive(sim, tmp_path, granularity="room", page_size=200)
    folder = archive_folder(tmp_path, exp)
    manifest = manifest_of(tmp_path, exp)
    listed = set()
    for stream in manifest.streams:
        assert stream.status == "complete"
        assert stream.error is None
        assert stream.records == stream.server_total
        assert sum(f.records for f in stream.files) == stream.records
        for file in stream.files:
            data = (folder / file.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == file.sha256
            assert len(data) == file.bytes
            assert data.count(b"\n") == file.records
            listed.add(file.path)
        if stream.data_type not in ("rooms", "participants"):
            assert stream.params["endTime"] == manifest.snapshot_end_time
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*.ndjson")}
    assert on_disk == listed
    assert not list(folder.rglob("*.part"))
    assert sim.api_key.encode() not in (folder / "manifest.json").read_bytes()


async def test_empty_streams_are_archived_as_empty_files(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    exp = sim.experiment_ids[0]
    rooms = [r["id"] for r in sim.dataset.rooms(exp)]
    empty = [
        (path, room)
        for path in DATA_TYPE_PATHS[:9]
        for room in rooms
        if sim.dataset.total(path, "room", room) == 0
    ]
    assert empty, "the simulator should serve some empty room streams"
    await _archive(sim, tmp_path, granularity="room")
    manifest = manifest_of(tmp_path, exp)
    for path, room in empty:
        key = f"{data_type_named(path).folder}/room/{room}"
        stream = next(s for s in manifest.streams if s.key == key)
        assert (stream.status, stream.records, stream.pages, stream.server_total) == (
            "complete",
            0,
            1,
            0,
        )
        assert (archive_folder(tmp_path, exp) / stream.files[0].path).read_bytes() == b""


async def test_total_an_exact_multiple_of_the_page_size(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    exp = sim.experiment_ids[0]
    total = sim.dataset.total("events", "experiment", exp)
    page_size = next(d for d in range(20, total) if total % d == 0)
    await _archive(
        sim, tmp_path, granularity="experiment", page_size=page_size, data_types="events"
    )
    stream = next(s for s in manifest_of(tmp_path, exp).streams if s.data_type == "events")
    assert stream.records == total
    assert stream.pages == stream.requests == total // page_size
    assert read_type(archive_folder(tmp_path, exp), "events") == expected_type(sim, "events", exp)


async def test_server_capping_the_limit_is_followed(tmp_path: Path) -> None:
    async with serve(SimulatorConfig(seed=3, rooms=2, records=150, max_page_size=70)) as sim:
        exp = sim.experiment_ids[0]
        await _archive(sim, tmp_path, page_size=500, data_types="eyetracking")
        total = sim.dataset.total("eyetracking", "experiment", exp)
        stream = manifest_of(tmp_path, exp).streams[-1]
        assert stream.records == total
        assert stream.requests == math.ceil(total / 70)
        assert read_type(archive_folder(tmp_path, exp), "eyetracking") == expected_type(
            sim, "eyetracking", exp
        )


async def test_short_pages_are_repaired_without_losing_or_repeating_records(tmp_path: Path) -> None:
    config = SimulatorConfig(seed=5, rooms=2, records=200, faults=FaultSpec.parse("short-page=0.3"))
    async with serve(config) as sim:
        exp = sim.experiment_ids[0]
        await _archive(sim, tmp_path, page_size=50, data_types="eyetracking,events")
        folder = archive_folder(tmp_path, exp)
        for name in ("eyetracking", "events"):
            assert read_type(folder, name) == expected_type(sim, name, exp)
        assert sim.stats()["faults"].get("short-page", 0) > 0


@pytest.mark.parametrize("granularity", ["experiment", "room", "participant"])
async def test_short_pages_complete_at_every_granularity(tmp_path: Path, granularity: str) -> None:
    """Many streams share the look-ahead: when one finishes or starts, the others' share
    changes between two pages, and a short page's gap must still be asked for."""
    config = SimulatorConfig(
        seed=7, rooms=12, participants=2, records=400, faults=FaultSpec.parse("short-page=0.15")
    )
    async with serve(config) as sim:
        exp = sim.experiment_ids[0]
        await _archive(
            sim,
            tmp_path,
            page_size=200,
            granularity=granularity,
            data_types="eyetracking,events",
            media=False,
        )
        manifest = manifest_of(tmp_path, exp)
        assert manifest.complete, [s.error for s in manifest.incomplete_streams]
        folder = archive_folder(tmp_path, exp)
        for name in ("eyetracking", "events"):
            assert sorted(map(_key, read_type(folder, name))) == sorted(
                map(_key, expected_type(sim, name, exp))
            )
        assert sim.stats()["faults"].get("short-page", 0) > 0


async def test_pages_without_limit_or_next_offset_from_a_capping_server(tmp_path: Path) -> None:
    """`limit` and `nextOffset` are optional: the next page starts after the records returned,
    not after the limit asked for (a server capping at 20 while asked for 30 would otherwise
    lose 10 records a page)."""
    config = SimulatorConfig(seed=3, rooms=2, records=60, max_page_size=20, bare_pagination=True)
    async with serve(config) as sim:
        exp = sim.experiment_ids[0]
        await _archive(sim, tmp_path, page_size=30, data_types="events,sync")
        manifest = manifest_of(tmp_path, exp)
        assert manifest.complete, [s.error for s in manifest.incomplete_streams]
        folder = archive_folder(tmp_path, exp)
        for name in ("events", "sync"):
            total = sim.dataset.total(name, "experiment", exp)
            assert total > 30
            assert read_type(folder, name) == expected_type(sim, name, exp)
            stream = next(s for s in manifest.streams if s.data_type == name)
            assert stream.requests == math.ceil(total / 20)


def test_blocking_download_from_a_script(tmp_path: Path) -> None:
    from hyperstudy_bulk.simulator import serve_in_thread

    with serve_in_thread(SimulatorConfig(seed=2, rooms=1, records=30)) as sim:
        manifests = download(
            sim.experiment_ids,
            api_key=sim.api_key,
            base_url=sim.base_url,
            out=tmp_path,
            data_types=["chat", "events"],
        )
        assert [m.complete for m in manifests] == [True]
        exp = sim.experiment_ids[0]
        assert read_type(archive_folder(tmp_path, exp), "chat") == expected_type(sim, "chat", exp)


async def test_blocking_download_inside_a_running_loop(tmp_path: Path) -> None:
    """A notebook cell: download() is called while an event loop runs in this thread."""
    from hyperstudy_bulk.simulator import serve_in_thread

    with serve_in_thread(SimulatorConfig(seed=2, rooms=1, records=30)) as sim:
        manifests = download(
            sim.experiment_ids[0], api_key=sim.api_key, base_url=sim.base_url, out=tmp_path
        )
        assert manifests[0].complete


async def test_ctrl_c_stops_a_blocking_download_inside_a_running_loop(tmp_path: Path) -> None:
    """A notebook cell: Ctrl-C (SIGINT, which ipykernel turns into KeyboardInterrupt, sent to
    the process: the kernel may deliver it to any thread) stops the download at once, leaves
    no thread behind, and the archive consistent: the same call then finishes it."""
    import os
    import signal
    import threading

    from hyperstudy_bulk.api import run_blocking
    from hyperstudy_bulk.simulator import serve_in_thread
    from hyperstudy_bulk.verify import verify_archive

    config = SimulatorConfig(seed=9, rooms=4, records=300, latency_ms=5)
    with serve_in_thread(config) as sim:
        exp = sim.experiment_ids[0]
        settings = settings_for(sim, tmp_path, page_size=50, concurrency=2)
        interrupted: list[int] = []

        def interrupt(_type: str, _records: int) -> None:
            if not interrupted:
                interrupted.append(1)
                os.kill(os.getpid(), signal.SIGINT)

        async def cell() -> object:
            async with Downloader(settings) as downloader:
                monitor = downloader.monitor()
                monitor.on_page = interrupt
                return await downloader.archive(exp, monitor=monitor)

        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with pytest.raises(KeyboardInterrupt):
                run_blocking(cell)
        finally:
            signal.signal(signal.SIGINT, previous)
        assert "hyperstudy-bulk download" not in [t.name for t in threading.enumerate()]
        manifest = manifest_of(tmp_path, exp)
        folder = archive_folder(tmp_path, exp)
        assert not manifest.complete
        published = {str(p.relative_to(folder)) for p in folder.rglob("*.ndjson")}
        assert published == {f.path for s in manifest.streams for f in s.files}
        assert interrupted
        manifests = download(exp, api_key=sim.api_key, base_url=sim.base_url, out=tmp_path)
        assert manifests[0].complete
        assert verify_archive(folder).whole
        assert read_type(folder, "events") == expected_type(sim, "events", exp)


async def test_cancelling_leaves_a_consistent_archive(tmp_path: Path) -> None:
    import asyncio

    config = SimulatorConfig(seed=9, rooms=4, records=300, latency_ms=5)
    async with serve(config) as sim:
        exp = sim.experiment_ids[0]
        settings = settings_for(sim, tmp_path, page_size=100, concurrency=4)
        async with Downloader(settings) as downloader:
            monitor = downloader.monitor()
            halfway = asyncio.Event()
            monitor.on_page = lambda _type, _records: (
                halfway.set() if monitor.records >= 2000 else None
            )
            task = asyncio.create_task(downloader.archive(exp, monitor=monitor))
            await halfway.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        manifest = manifest_of(tmp_path, exp)
        folder = archive_folder(tmp_path, exp)
        assert not manifest.complete
        for stream in manifest.streams:
            if stream.status == "complete":
                path = stream.data_type.replace("ratings-", "ratings/")
                assert read_stream(folder, stream.files) == sim.dataset.records(
                    path, "experiment", exp
                )
            else:
                assert stream.files == []
        published = {str(p.relative_to(folder)) for p in folder.rglob("*.ndjson")}
        assert published == {f.path for s in manifest.streams for f in s.files}
