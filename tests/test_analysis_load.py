"""`load()` and `iter_frames()` give the official SDK's DataFrame for an archive's records."""

from __future__ import annotations

import asyncio
import shutil
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import hyperstudy
import pandas as pd
import pytest
from conftest import UNLIMITED, archive_folder

from hyperstudy_bulk import iter_frames, load, load_settings
from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.archive import ArchiveError, IncompleteDataError
from hyperstudy_bulk.manifest import load_manifest
from hyperstudy_bulk.simulator import SimulatorConfig, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle

CONFIG = SimulatorConfig(seed=11, rooms=3, participants=2, records=120)
Fetch = Callable[..., pd.DataFrame]
SDK_CALLS: dict[str, Fetch] = {
    "events": lambda hs, eid: hs.get_events(eid, progress=False),
    "recordings": lambda hs, eid: hs.get_recordings(eid, progress=False),
    "chat": lambda hs, eid: hs.get_chat(eid, progress=False),
    "videochat": lambda hs, eid: hs.get_videochat(eid, progress=False),
    "ratings-continuous": lambda hs, eid: hs.get_ratings(eid, kind="continuous", progress=False),
    "ratings-sparse": lambda hs, eid: hs.get_ratings(eid, kind="sparse", progress=False),
    "sync": lambda hs, eid: hs.get_sync(eid, progress=False),
    "components": lambda hs, eid: hs.get_components(eid, progress=False),
    "eyetracking": lambda hs, eid: hs.get_eyetracking(eid, progress=False),
    "participants": lambda hs, eid: hs.get_participants(eid, progress=False),
    "rooms": lambda hs, eid: hs.get_rooms(eid, progress=False),
}
GROWING = ("events", "chat", "eyetracking", "ratings/sparse")


def _archive(sim: SimulatorHandle, out: Path, granularity: str, **options: Any) -> Any:
    settings = load_settings(
        {
            **UNLIMITED,
            "api_key": sim.api_key,
            "base_url": sim.base_url,
            "out": str(out),
            "granularity": granularity,
            "page_size": 100,
            "media": False,
        },
        environ={},
        cwd=out.parent,
    )

    async def run() -> Any:
        async with Downloader(settings) as downloader:
            return await downloader.archive(sim.experiment_ids[0], **options)

    return asyncio.run(run())


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    with serve_in_thread(CONFIG) as handle:
        yield handle


@pytest.fixture(scope="module")
def archives(sim: SimulatorHandle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One archive per granularity, each of two windows: records were added after the first
    download and `--update` fetched them."""
    exp = sim.experiment_ids[0]
    out = {g: tmp_path_factory.mktemp(g) for g in ("experiment", "room")}
    for granularity, folder in out.items():
        _archive(sim, folder, granularity)
    added = [record for name in GROWING for record in sim.mutate(exp, name, append=25)]
    latest = max(datetime.fromisoformat(r["timestamp"]) for r in added)
    for granularity, folder in out.items():
        manifest = _archive(sim, folder, granularity, update=True, now=latest + timedelta(1))
        assert manifest.complete
        assert len(manifest.snapshots) == 2
    return {g: archive_folder(folder, exp) for g, folder in out.items()}


@pytest.fixture(scope="module")
def sdk_frames(sim: SimulatorHandle, archives: dict[str, Path]) -> dict[str, pd.DataFrame]:
    client = hyperstudy.HyperStudy(api_key=sim.api_key, base_url=sim.base_url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the simulator's MISSING_INDEX warning for videochat
        return {name: call(client, sim.experiment_ids[0]) for name, call in SDK_CALLS.items()}


@pytest.mark.parametrize("data_type", SDK_CALLS)
def test_experiment_archive_loads_as_the_sdk_frame(
    archives: dict[str, Path], sdk_frames: dict[str, pd.DataFrame], data_type: str
) -> None:
    frame = load(archives["experiment"], data_type)
    pd.testing.assert_frame_equal(frame, sdk_frames[data_type])


@pytest.mark.parametrize("data_type", SDK_CALLS)
def test_room_archive_loads_as_the_sdk_frame_in_time_order(
    archives: dict[str, Path], sdk_frames: dict[str, pd.DataFrame], data_type: str
) -> None:
    frame = load(archives["room"], data_type)
    pd.testing.assert_frame_equal(frame, sdk_frames[data_type], check_like=True)


def test_several_windows_load_each_record_once(
    archives: dict[str, Path], sdk_frames: dict[str, pd.DataFrame]
) -> None:
    for folder in archives.values():
        windows = {s.window for s in load_manifest(folder).streams if s.data_type == "events"}
        assert windows == {0, 1}
        ids = load(folder, "events")["id"]
        assert ids.is_unique
        assert len(ids) == len(sdk_frames["events"])


def test_iter_frames_are_load_in_pieces(archives: dict[str, Path]) -> None:
    for folder in archives.values():
        pieces = list(iter_frames(folder, "ratings-sparse", rows=7))
        assert {len(piece) for piece in pieces[:-1]} == {7}
        joined = pd.concat(pieces)
        pd.testing.assert_frame_equal(joined, load(folder, "ratings-sparse"))


def test_columns_rooms_and_participants_select(
    archives: dict[str, Path], sdk_frames: dict[str, pd.DataFrame]
) -> None:
    sdk = sdk_frames["ratings-sparse"]
    participant = sdk["participantId"].iloc[-1]
    rooms = load(archives["experiment"], "participants", columns=["id", "roomId"])
    room = rooms.loc[rooms["id"] == participant, "roomId"].iloc[0]
    columns = ["onset_sec", "participantId", "metadata_dimension", "timestamp"]
    for folder in archives.values():
        frame = load(folder, "ratings-sparse", columns=columns, rooms=[room])
        members = set(rooms.loc[rooms["roomId"] == room, "id"])
        expected = sdk.loc[sdk["participantId"].isin(members), columns].reset_index(drop=True)
        assert len(expected) > 0
        pd.testing.assert_frame_equal(frame, expected)
        mine = load(folder, "events", participants=[participant])
        assert set(mine["participantId"]) == {participant}
        assert len(mine) == (sdk_frames["events"]["participantId"] == participant).sum()


def test_incomplete_stream_raises_unless_asked(archives: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    source = archives["experiment"]
    shutil.copytree(source, folder)
    manifest = load_manifest(folder)
    stream = next(s for s in manifest.streams if s.data_type == "chat")
    stream.status, stream.error = "incomplete", "HTTP 503 after 8 attempts"
    manifest.save(folder)
    with pytest.raises(IncompleteDataError, match=r"chat in .* is incomplete: .*chat.*incomplete"):
        load(folder, "chat")
    held = sum(s.records for s in manifest.streams if s.data_type == "chat")
    assert len(load(folder, "chat", allow_incomplete=True)) == held
    assert len(load(folder, "events")) > 0


def test_unknown_names_are_one_line_errors(archives: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="holds no data type 'gaze'; it holds events, "):
        load(archives["experiment"], "gaze")
    with pytest.raises(ArchiveError, match="no column 'nope'"):
        load(archives["experiment"], "chat", columns=["nope"])
    with pytest.raises(ArchiveError, match="is not an archive"):
        load(tmp_path, "events")


def test_stray_and_part_files_are_not_read(archives: dict[str, Path], tmp_path: Path) -> None:
    folder = archives["room"]
    before = load(folder, "chat")
    record = before.iloc[0]["messageId"]
    stray = folder / "chat" / "stray.ndjson"
    part = folder / "chat" / "room-x-00009.ndjson.part"
    for path in (stray, part):
        path.write_text(f'{{"messageId": "{record}-copy", "timestamp": "2020-01-01"}}\n')
    try:
        pd.testing.assert_frame_equal(load(folder, "chat"), before)
    finally:
        stray.unlink()
        part.unlink()
