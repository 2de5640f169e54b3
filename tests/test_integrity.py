"""Refetches, updates, cancels and crashes never lose or duplicate a record, nor leave a file
the manifest does not list: part numbers have one owner, a refetch resumes by the path a first
fetch takes, publishing a file and recording it are one step, and old files go only once the
new ones are recorded."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import archive_folder, read_type, settings_for
from test_hostile import rogue_server, settings_for_base

from hyperstudy_bulk import sinks
from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.manifest import Manifest, load_manifest
from hyperstudy_bulk.simulator import SimulatorConfig, serve
from hyperstudy_bulk.simulator.server import SimulatorHandle
from hyperstudy_bulk.verify import verify_archive

CONFIG = SimulatorConfig(seed=13, rooms=3, participants=2, records=200, latency_ms=2)


async def _archive(
    sim: SimulatorHandle,
    out: Path,
    *,
    types: str = "events,rooms",
    on_page: Callable[[str, int], None] | None = None,
    **options: Any,
) -> Manifest:
    """One download of the simulator's experiment into `out`; `on_page` sees every page."""
    archive = {k: options.pop(k) for k in ("update", "now") if k in options}
    settings = settings_for(sim, out, data_types=types, **options)
    async with Downloader(settings) as downloader:
        monitor = downloader.monitor()
        if on_page is not None:
            monitor.on_page = on_page
        return await downloader.archive(sim.experiment_ids[0], monitor=monitor, **archive)


async def _cancelled(
    sim: SimulatorHandle, out: Path, at_page: int, data_type: str, **options: Any
) -> None:
    """A download cancelled (as by Ctrl-C) when the `at_page`-th page of `data_type` arrives."""
    pages = 0
    task: asyncio.Task[Manifest] | None = None

    def on_page(name: str, _records: int) -> None:
        nonlocal pages
        if name == data_type:
            pages += 1
            if pages == at_page and task is not None:
                task.cancel()

    task = asyncio.create_task(_archive(sim, out, on_page=on_page, **options))
    with pytest.raises(asyncio.CancelledError):
        await task


def assert_exact(sim: SimulatorHandle, folder: Path, data_type: str) -> None:
    """Every record the server holds up to the snapshot, once; every part file on disk listed
    by the manifest; verify passes."""
    manifest = load_manifest(folder)
    assert manifest.complete
    served = sim.dataset.records(
        data_type, "experiment", manifest.experiment_id, end_time=manifest.snapshot_end_time
    )
    archived = read_type(folder, data_type)
    assert sorted(map(repr, archived)) == sorted(map(repr, served))
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*.ndjson*")}
    assert on_disk == {f.path for s in manifest.streams for f in s.files}
    report = verify_archive(folder)
    assert report.whole, [str(p) for p in report.problems]


async def test_two_windows_refetched_at_once_each_get_their_own_part_files(tmp_path: Path) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        options: dict[str, Any] = {"page_size": 40, "concurrency": 3}
        await _archive(sim, tmp_path, **options)
        sim.mutate(exp, "events", append=20)
        later = datetime.now(UTC) + timedelta(days=1)  # records appended later fall in window 1
        await _archive(sim, tmp_path, update=True, now=later, **options)
        sim.mutate(exp, "events", insert=3)  # late in window 0
        sim.mutate(exp, "events", append=5)  # late in window 1
        again = await _archive(sim, tmp_path, **options)
        assert again.complete
        events = [e for e in again.streams if e.data_type == "events"]
        assert [e.window for e in events] == [0, 1]
        paths = [f.path for e in events for f in e.files]
        assert len(paths) == len(set(paths)) == 2
        assert_exact(sim, archive_folder(tmp_path, exp), "events")


@pytest.mark.parametrize(
    ("data_type", "part_max_mb", "at_page"),
    [("events", 256, 5), ("eyetracking", 1, 40)],
    ids=["one-part", "several-parts"],
)
async def test_a_cancelled_refetch_resumes_to_what_an_uninterrupted_one_gives(
    tmp_path: Path, data_type: str, part_max_mb: int, at_page: int
) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        options: dict[str, Any] = {
            "types": f"{data_type},rooms",
            "page_size": 100,
            "concurrency": 2,
            "part_max_mb": part_max_mb,
        }
        await _archive(sim, tmp_path, **options)
        sim.mutate(exp, data_type, insert=2)
        await _cancelled(sim, tmp_path, at_page, data_type, **options)
        folder = archive_folder(tmp_path, exp)
        interrupted = load_manifest(folder)
        assert not interrupted.complete
        (refetched,) = [s for s in interrupted.streams if s.data_type == data_type]
        assert refetched.superseded, "the old files stay recorded until the new ones are"
        assert (await _archive(sim, tmp_path, **options)).complete
        assert_exact(sim, folder, data_type)


async def test_an_interrupted_second_attempt_of_a_refetch_orphans_nothing(tmp_path: Path) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        options: dict[str, Any] = {"page_size": 40, "concurrency": 3}
        await _archive(sim, tmp_path, **options)
        added = sim.mutate(exp, "events", append=20)
        latest = max(datetime.fromisoformat(r["timestamp"]) for r in added)
        await _archive(sim, tmp_path, update=True, now=latest + timedelta(seconds=1), **options)
        sim.mutate(exp, "events", insert=3)
        pages = 0
        task: asyncio.Task[Manifest] | None = None

        def on_page(name: str, _records: int) -> None:
            nonlocal pages
            if name != "events" or task is None:
                return
            pages += 1
            if pages == 25:  # late again during the refetch: its count will disagree
                sim.mutate(exp, "events", insert=6)
            if pages == 45:  # the second attempt is under way
                task.cancel()

        task = asyncio.create_task(_archive(sim, tmp_path, on_page=on_page, **options))
        with pytest.raises(asyncio.CancelledError):
            await task
        again = await _archive(sim, tmp_path, **options)
        (window0,) = [e for e in again.streams if e.data_type == "events" and e.window == 0]
        assert window0.refetches == 1
        assert_exact(sim, archive_folder(tmp_path, exp), "events")


async def test_a_cancel_while_publishing_keeps_the_file_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve(SimulatorConfig(seed=9, rooms=2, records=300)) as sim:
        exp = sim.experiment_ids[0]
        loop = asyncio.get_running_loop()
        publishing, cancelled = asyncio.Event(), threading.Event()
        finish = sinks.StreamSink.finish

        def announced_finish(self: sinks.StreamSink) -> list[sinks.FileResult]:
            if self._stem.startswith("events/"):
                loop.call_soon_threadsafe(publishing.set)
                cancelled.wait(timeout=30)  # the rename happens once the cancel is requested
            return finish(self)

        monkeypatch.setattr(sinks.StreamSink, "finish", announced_finish)
        options: dict[str, Any] = {"types": "events,chat", "page_size": 100, "concurrency": 4}
        task = asyncio.create_task(_archive(sim, tmp_path, **options))
        await publishing.wait()
        task.cancel()
        cancelled.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        monkeypatch.setattr(sinks.StreamSink, "finish", finish)
        folder = archive_folder(tmp_path, exp)
        manifest = load_manifest(folder)
        (events,) = [s for s in manifest.streams if s.data_type == "events"]
        assert events.status == "complete"
        published = {str(p.relative_to(folder)) for p in folder.rglob("*.ndjson")}
        assert published == {f.path for s in manifest.streams for f in s.files}
        before = _requests_for(sim, "events")
        again = await _archive(sim, tmp_path, **options)
        (events,) = [s for s in again.streams if s.data_type == "events"]
        assert events.status == "complete"
        # at most its total is asked again (when the rest was done too), never its pages
        assert _requests_for(sim, "events") - before <= 1
        assert_exact(sim, folder, "events")


async def test_a_run_cancelled_before_its_last_streams_started_is_not_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the randomised test (seed 188): one worker, cancelled while it published the
    first room's stream (which is then complete); the second room's had not started."""
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        loop = asyncio.get_running_loop()
        publishing, cancelled = asyncio.Event(), threading.Event()
        finish = sinks.StreamSink.finish

        def announced_finish(self: sinks.StreamSink) -> list[sinks.FileResult]:
            loop.call_soon_threadsafe(publishing.set)
            cancelled.wait(timeout=30)
            return finish(self)

        monkeypatch.setattr(sinks.StreamSink, "finish", announced_finish)
        options: dict[str, Any] = {
            "types": "events",
            "granularity": "room",
            "concurrency": 1,
            "media": False,
        }
        task = asyncio.create_task(_archive(sim, tmp_path, **options))
        await publishing.wait()
        task.cancel()
        cancelled.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        monkeypatch.setattr(sinks.StreamSink, "finish", finish)
        folder = archive_folder(tmp_path, exp)
        assert [s.status for s in load_manifest(folder).streams] == ["complete"]
        assert not load_manifest(folder).complete
        assert (await _archive(sim, tmp_path, **options)).complete
        assert_exact(sim, folder, "events")


async def test_a_renamed_part_is_durable_before_anything_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After each rename of a data file its folder is fsynced before the next file is replaced
    (a checkpoint or the manifest that will name it), so a power loss cannot undo the rename
    while a record of it survives."""
    log: list[tuple[str, str]] = []
    replace, fsync = os.replace, os.fsync

    def logged_replace(src: Any, dst: Any) -> None:
        replace(src, dst)
        log.append(("replace", str(dst)))

    def logged_fsync(fd: int) -> None:
        fsync(fd)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            log.append(("fsync-dir", os.readlink(f"/proc/self/fd/{fd}")))

    monkeypatch.setattr(os, "replace", logged_replace)
    monkeypatch.setattr(os, "fsync", logged_fsync)
    async with serve(CONFIG) as sim:
        await _archive(sim, tmp_path, types="events,chat", page_size=100, concurrency=1)
    renames = [i for i, (kind, path) in enumerate(log) if kind == "replace" and ".ndjson" in path]
    assert renames
    for index in renames:
        folder = str(Path(log[index][1]).parent)
        after = log[index + 1 :]
        upto = next((i for i, (kind, _) in enumerate(after) if kind == "replace"), len(after))
        assert ("fsync-dir", folder) in after[:upto], log[index:]


async def test_a_stream_left_incomplete_on_a_count_mismatch_is_retried_by_the_next_run(
    tmp_path: Path,
) -> None:
    def page(total: int) -> dict[str, object]:
        records = [{"id": f"e{i}", "timestamp": "2025-01-01T00:00:00.000Z"} for i in range(2)]
        meta = {"total": total, "returned": 2, "hasMore": False, "limit": 1000, "offset": 0}
        return {"status": "success", "data": records, "metadata": {"pagination": meta}}

    lying = [page(3)] * 3  # the first fetch and both refetches: total 3, two records
    async with rogue_server([*lying, page(2)]) as (base, _):
        settings = settings_for_base(base, tmp_path, data_types="events", granularity="experiment")
        async with Downloader(settings) as downloader:
            first = await downloader.archive("exp-1")
            assert not first.complete
            second = await downloader.archive("exp-1")
    assert second.complete
    folder = archive_folder(tmp_path, "exp-1")
    assert [r["id"] for r in read_type(folder, "events")] == ["e0", "e1"]
    assert verify_archive(folder).whole


def _requests_for(sim: SimulatorHandle, data_type: str) -> int:
    """API requests the simulator answered for `data_type`, whatever their status."""
    routes = sim.stats()["requests"]
    return sum(sum(statuses.values()) for route, statuses in routes.items() if data_type in route)
