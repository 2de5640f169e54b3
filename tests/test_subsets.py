"""Part of an experiment: chosen rooms, participants of one room, a span of time. The archive
holds exactly the server's records of the selection, the manifest says which, and a different
selection is never mixed into the same folder."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import archive_folder, cli_options, manifest_of, read_type, settings_for

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.config import load_settings
from hyperstudy_bulk.manifest import Manifest
from hyperstudy_bulk.simulator import DATA_TYPES, SimulatorConfig, serve
from hyperstudy_bulk.simulator.server import SimulatorHandle
from hyperstudy_bulk.timespec import iso_utc

CONFIG = SimulatorConfig(seed=21, rooms=4, participants=3, records=40)
TIME_ORDERED = [t for t in DATA_TYPES if t not in ("participants", "rooms")]


def folder_of(path: str) -> str:
    return path.replace("ratings/", "ratings-")


def same_records(archived: list[dict[str, Any]], served: list[dict[str, Any]]) -> bool:
    """Equal as collections of records (streams of several rooms may come in any order)."""
    return sorted(map(orjson.dumps, archived)) == sorted(map(orjson.dumps, served))


async def _archive(
    sim: SimulatorHandle,
    out: Path,
    *,
    now: datetime | None = None,
    update: bool = False,
    **opt: Any,
) -> Manifest:
    settings = settings_for(sim, out, media=False, page_size=25, concurrency=4, **opt)
    async with Downloader(settings) as downloader:
        return await downloader.archive(sim.experiment_ids[0], update=update, now=now)


def _cli(sim: SimulatorHandle, out: Path, *args: str) -> list[str]:
    return ["download", sim.experiment_ids[0], *cli_options(sim), "--out", str(out), *args]


async def test_chosen_rooms_hold_exactly_their_records_of_every_type(tmp_path: Path) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        rooms = [room["id"] for room in sim.dataset.rooms(exp)]
        chosen = [rooms[0], rooms[2]]
        args = _cli(sim, tmp_path, "--room", chosen[0], "--room", chosen[1], "--no-media")
        assert await asyncio.to_thread(main, args) == 0
        manifest = manifest_of(tmp_path, exp)
        folder = archive_folder(tmp_path, exp)
        end = manifest.snapshot_end_time
        for path in TIME_ORDERED:
            served = [
                r for room in chosen for r in sim.dataset.records(path, "room", room, end_time=end)
            ]
            assert same_records(read_type(folder, folder_of(path)), served), path
        assert read_type(folder, "rooms") == [
            r for r in sim.dataset.rooms(exp) if r["id"] in chosen
        ]
        participants = [r for room in chosen for r in sim.dataset.participants("room", room)]
        assert same_records(read_type(folder, "participants"), participants)
        assert manifest.selection is not None
        assert manifest.selection["rooms"] == chosen
        assert manifest.granularity == "room"
        assert main(["verify", str(folder)]) == 0


async def test_one_participant_of_one_room(tmp_path: Path) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        room = sim.dataset.rooms(exp)[1]["id"]
        members = [p["id"] for p in sim.dataset.participants("room", room)]
        args = _cli(sim, tmp_path, "--participant", members[1], "--room", room, "--no-media")
        assert await asyncio.to_thread(main, args) == 0
        folder = archive_folder(tmp_path, exp)
        end = manifest_of(tmp_path, exp).snapshot_end_time
        for path in TIME_ORDERED:
            served = sim.dataset.records(path, "participant", members[1], room, end_time=end)
            assert read_type(folder, folder_of(path)) == served, path
        assert [p["id"] for p in read_type(folder, "participants")] == [members[1]]
        assert [r["id"] for r in read_type(folder, "rooms")] == [room]
        listing = next(s for s in manifest_of(tmp_path, exp).streams if s.data_type == "rooms")
        assert listing.excluded == len(sim.dataset.rooms(exp)) - 1


async def test_a_time_span_absolute_and_relative(tmp_path: Path) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        events = sim.dataset.records("events", "experiment", exp)
        since, until = events[len(events) // 4]["timestamp"], events[len(events) // 2]["timestamp"]
        manifest = await _archive(sim, tmp_path / "a", since=since, until=until)
        folder = archive_folder(tmp_path / "a", exp)
        for path in TIME_ORDERED:
            served = sim.dataset.records(path, "experiment", exp, start_time=since, end_time=until)
            assert read_type(folder, folder_of(path)) == served, path
        assert read_type(folder, "rooms") == sim.dataset.rooms(exp)
        assert manifest.selection is not None
        assert (manifest.selection["since"], manifest.selection["until"]) == (since, until)

        now = datetime.fromisoformat(events[-1]["timestamp"])
        relative = await _archive(sim, tmp_path / "r", since="2h", now=now)
        start = iso_utc(now - timedelta(hours=2))
        assert relative.selection is not None
        assert (relative.selection["since"], relative.selection["since_asked"]) == (start, "2h")
        served = sim.dataset.records(
            "events", "experiment", exp, start_time=start, end_time=relative.snapshot_end_time
        )
        assert 0 < len(served) < len(events)
        assert read_type(archive_folder(tmp_path / "r", exp), "events") == served


async def test_update_of_a_subset_stays_inside_it(tmp_path: Path) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        rooms = [room["id"] for room in sim.dataset.rooms(exp)]
        await _archive(sim, tmp_path, room=rooms[3])
        inside = sim.mutate(exp, "events", append=6, room_id=rooms[3])
        outside = sim.mutate(exp, "events", append=5, room_id=rooms[0])
        latest = max(datetime.fromisoformat(r["timestamp"]) for r in inside + outside)
        updated = await _archive(sim, tmp_path, update=True, now=latest + timedelta(seconds=1))
        assert updated.complete
        assert len(updated.snapshots) == 2
        folder = archive_folder(tmp_path, exp)
        archived = read_type(folder, "events")
        end = updated.snapshot_end_time
        assert archived == sim.dataset.records("events", "room", rooms[3], end_time=end)
        assert {r["id"] for r in inside} <= {r["id"] for r in archived}
        assert not {r["id"] for r in outside} & {r["id"] for r in archived}
        assert main(["verify", str(folder)]) == 0


async def test_a_different_selection_into_the_same_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        rooms = [room["id"] for room in sim.dataset.rooms(exp)]
        assert await asyncio.to_thread(main, _cli(sim, tmp_path, "--room", rooms[0])) == 0
        folder = archive_folder(tmp_path, exp)
        files = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        capsys.readouterr()
        sim.reset()
        for other in (["--room", rooms[1]], [], ["--room", rooms[0], "--since", "7d"]):
            assert await asyncio.to_thread(main, _cli(sim, tmp_path, *other)) == 2
            message = capsys.readouterr().err
            assert message.count("\n") == 1
            assert f"holds room {rooms[0]}" in message
            assert "another --out" in message
        assert sim.stats()["total"] == 0
        assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files
        # The same selection (in another spelling) continues the archive.
        assert await asyncio.to_thread(main, _cli(sim, tmp_path, f"--room={rooms[0]},")) == 0


async def test_unknown_room_or_participant_exits_2_before_any_data_is_fetched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        room = sim.dataset.rooms(exp)[0]["id"]
        cases = [
            (["--room", f"{room},no-such-room"], "no room 'no-such-room'", {"rooms"}),
            (
                ["--room", room, "--participant", "nobody"],
                "no participant 'nobody'",
                {"rooms", "participants"},
            ),
            (["--participant", "nobody"], "--participant needs exactly one --room", set()),
        ]
        for args, named, listings in cases:
            sim.reset()
            capsys.readouterr()
            assert await asyncio.to_thread(main, _cli(sim, tmp_path, *args)) == 2, args
            message = capsys.readouterr().err
            assert named in message
            assert message.count("\n") == 1, message
            routes = {route.split("/")[2] for route in sim.stats()["requests"]}
            assert routes == listings, args
            assert not archive_folder(tmp_path, exp).exists()


def test_subset_options_from_environment_and_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('room = ["r1", "r2"]\nsince = "2026-03-01T09:00:00+01:00"\n')
    settings = load_settings(
        {}, environ={"HYPERSTUDY_UNTIL": "1h"}, cwd=tmp_path, config_file=config
    )
    assert settings.room == ("r1", "r2")
    assert str(settings.since) == "2026-03-01T08:00:00.000Z"
    assert str(settings.until) == "1h"
    flags = load_settings({"room": ["a,b", "a"], "participant": ["p"]}, environ={}, cwd=tmp_path)
    assert (flags.room, flags.participant) == (("a", "b"), ("p",))


def test_bad_time_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "exp", "--since", "yesterday", "--api-key", "hst_test_x"]) == 2
    message = capsys.readouterr().err
    assert "since must be an ISO 8601 time" in message
    assert message.count("\n") == 1


async def test_plan_takes_the_same_selection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        room = sim.dataset.rooms(exp)[2]["id"]
        key = ["--api-key", sim.api_key, "--base-url", sim.base_url]
        args = ["plan", exp, *key, "--room", room, "--data-types", "events,chat"]
        assert await asyncio.to_thread(main, args) == 0
        out = capsys.readouterr().out
        events = len(sim.dataset.records("events", "room", room))
        assert f"{events:,}" in out
        assert f"{exp}: room {room}\n" in out


async def test_a_subset_is_not_split_into_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shards share a plan of whole experiments: a selection would be silently ignored."""
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        room = sim.dataset.rooms(exp)[0]["id"]
        for subset in (["--room", room], ["--since", "2h"]):
            capsys.readouterr()
            args = _cli(sim, tmp_path, *subset, "--shard", "1/2", "--no-media")
            assert await asyncio.to_thread(main, args) == 2, subset
            message = capsys.readouterr().err
            assert "shard 1/2: the shards split whole experiments" in message
            assert message.count("\n") == 1, message
            assert not archive_folder(tmp_path, exp).exists()
            assert sim.stats()["requests"] == {}
