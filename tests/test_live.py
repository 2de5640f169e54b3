"""Experiments that are still running: a crawl bounded by its snapshot, data changing under it,
`--update` adding only what is new, and a complete archive confirmed with a few requests."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import archive_folder, cli_options, manifest_of, read_type, settings_for

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.simulator import SimulatorConfig, serve
from hyperstudy_bulk.simulator.server import SimulatorHandle

CONFIG = SimulatorConfig(seed=13, rooms=3, participants=2, records=200)
TYPES = "events,eyetracking,chat,rooms"


def served(sim: SimulatorHandle, path: str, end_time: str) -> list[dict[str, Any]]:
    return sim.dataset.records(path, "experiment", sim.experiment_ids[0], end_time=end_time)


async def _archive(sim: SimulatorHandle, out: Path, **options: object) -> Any:
    settings = settings_for(sim, out, data_types=TYPES, page_size=40, concurrency=3)
    async with Downloader(settings) as downloader:
        return await downloader.archive(sim.experiment_ids[0], **options)


async def test_records_added_during_the_crawl_neither_lost_nor_duplicated(tmp_path: Path) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        settings = settings_for(sim, tmp_path, data_types=TYPES, page_size=40, concurrency=3)
        added: list[dict[str, Any]] = []
        async with Downloader(settings) as downloader:
            monitor = downloader.monitor()

            def mutate_midway(data_type: str, _records: int) -> None:
                if not added and monitor.of("events").records > 1000:
                    added.extend(sim.mutate(exp, "events", append=7, insert=5))
                    added.extend(sim.mutate(exp, "eyetracking", append=3, insert=9))

            monitor.on_page = mutate_midway
            manifest = await downloader.archive(exp, monitor=monitor)
        assert added, "the mutation should have happened mid-crawl"
        assert manifest.complete
        snapshot = manifest.snapshot_end_time
        folder = archive_folder(tmp_path, exp)
        for name in ("events", "eyetracking"):
            archived = read_type(folder, name)
            assert archived == served(sim, name, snapshot), name
            assert len({r["id"] for r in archived}) == len(archived)
        inserted = {r["id"] for r in added if r["timestamp"] < snapshot}
        assert inserted <= {
            r["id"] for r in read_type(folder, "events") + read_type(folder, "eyetracking")
        }
        appended = {r["id"] for r in added if r["timestamp"] >= snapshot}
        assert appended
        assert not appended & {r["id"] for r in read_type(folder, "events")}
        events = next(s for s in manifest.streams if s.data_type == "events")
        assert events.refetches + events.duplicates_dropped > 0


async def test_update_adds_only_what_is_new_and_leaves_the_rest(tmp_path: Path) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        first = await _archive(sim, tmp_path)
        folder = archive_folder(tmp_path, exp)
        before = {p: p.read_bytes() for p in folder.rglob("*.ndjson")}
        added = sim.mutate(exp, "events", append=55) + sim.mutate(exp, "chat", append=2)
        latest = max(datetime.fromisoformat(r["timestamp"]) for r in added)
        updated = await _archive(sim, tmp_path, update=True, now=latest + timedelta(seconds=1))
        assert updated.complete
        assert len(updated.snapshots) == 2
        assert updated.snapshots[0] == first.snapshot_end_time
        for path, data in before.items():
            assert path.read_bytes() == data, path
        for name in ("events", "eyetracking", "chat"):
            archived = read_type(folder, name)
            assert archived == served(sim, name, updated.snapshot_end_time), name
        new_files = {p for p in folder.rglob("*.ndjson")} - set(before)
        assert {str(p.relative_to(folder)) for p in new_files} == {
            "events/experiment-00002.ndjson",
            "chat/experiment-00002.ndjson",
        }
        assert read_type(folder, "rooms") == sim.dataset.rooms(exp)
        assert main(["verify", str(folder)]) == 0


async def test_update_from_the_command_line(tmp_path: Path) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        await _archive(sim, tmp_path)
        sim.mutate(exp, "events", append=3)
        folder = archive_folder(tmp_path, exp)
        args = ["download", "--update", str(folder), *cli_options(sim), "--data-types", TYPES]
        assert await asyncio.to_thread(main, args) == 0
        assert len(manifest_of(tmp_path, exp).snapshots) == 2
        assert (
            await asyncio.to_thread(main, ["download", "--update", str(tmp_path / "nothing-here")])
            == 2
        )


async def test_a_complete_archive_is_confirmed_with_one_request_per_type(tmp_path: Path) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        await _archive(sim, tmp_path)
        folder = archive_folder(tmp_path, exp)
        files = {p: p.stat().st_mtime_ns for p in folder.rglob("*.ndjson")}
        before = sim.stats()["total"]
        notes: list[str] = []
        settings = settings_for(sim, tmp_path, data_types=TYPES, page_size=40)
        async with Downloader(settings) as downloader:
            monitor = downloader.monitor()
            monitor.note = notes.append
            manifest = await downloader.archive(exp, monitor=monitor)
        assert manifest.complete
        assert sim.stats()["total"] - before == 3  # events, eyetracking, chat: rooms is a listing
        assert notes == ["archive was complete; 3 requests checked it: nothing changed"]
        assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.ndjson")} == files


async def test_late_records_in_a_complete_archive_are_fetched_again(tmp_path: Path) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        first = await _archive(sim, tmp_path)
        late = sim.mutate(exp, "events", insert=4)
        assert all(r["timestamp"] < first.snapshot_end_time for r in late)
        again = await _archive(sim, tmp_path)
        assert again.complete
        folder = archive_folder(tmp_path, exp)
        assert read_type(folder, "events") == served(sim, "events", first.snapshot_end_time)
        assert read_type(folder, "eyetracking") == served(
            sim, "eyetracking", first.snapshot_end_time
        )
        assert main(["verify", str(folder)]) == 0


async def test_late_records_in_an_earlier_window_leave_later_windows_untouched(
    tmp_path: Path,
) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        first = await _archive(sim, tmp_path)
        added = sim.mutate(exp, "events", append=20)
        latest = max(datetime.fromisoformat(r["timestamp"]) for r in added)
        updated = await _archive(sim, tmp_path, update=True, now=latest + timedelta(seconds=1))
        folder = archive_folder(tmp_path, exp)
        second_window = folder / "events" / "experiment-00002.ndjson"
        kept = second_window.read_bytes()
        late = sim.mutate(exp, "events", insert=3)
        assert all(r["timestamp"] < first.snapshot_end_time for r in late)
        again = await _archive(sim, tmp_path)
        assert again.complete
        assert second_window.read_bytes() == kept
        events = [e for e in again.streams if e.data_type == "events"]
        assert [f.path for e in events for f in e.files] == [
            "events/experiment-00003.ndjson",
            "events/experiment-00002.ndjson",
        ]
        assert not (folder / "events" / "experiment-00001.ndjson").exists()
        assert read_type(folder, "events") == served(sim, "events", updated.snapshot_end_time)
        assert main(["verify", str(folder)]) == 0


async def test_asking_a_complete_archive_for_more_data_types_adds_them(tmp_path: Path) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        first = await _archive(sim, tmp_path)
        settings = settings_for(sim, tmp_path, data_types="events,sync", page_size=40)
        async with Downloader(settings) as downloader:
            manifest = await downloader.archive(exp)
        assert manifest.complete
        assert manifest.snapshot_end_time == first.snapshot_end_time
        assert manifest.data_types == ["events", "eyetracking", "chat", "rooms", "sync"]
        folder = archive_folder(tmp_path, exp)
        assert read_type(folder, "sync") == served(sim, "sync", first.snapshot_end_time)
        assert read_type(folder, "events") == served(sim, "events", first.snapshot_end_time)
