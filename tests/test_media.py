"""Recording media: every file fetched whole and identical, resumed with Range, re-minted when
a signed URL expires, verified; the API key never reaches the media host."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import (
    archive_folder,
    cancel_at_first_media_bytes,
    cli_options,
    manifest_of,
    settings_for,
)

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.manifest import MANIFEST_NAME, MediaEntry, load_manifest
from hyperstudy_bulk.media import MediaFetcher, media_name, plan_media
from hyperstudy_bulk.progress import MediaProgress, Monitor
from hyperstudy_bulk.simulator import FaultSpec, SimulatorConfig, serve, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle

MEDIA = SimulatorConfig(seed=23, rooms=4, participants=2, records=20, media_bytes=300_000)
MEDIA_ROUTE = "GET /media/{roomId}/{recordingId}"
MINT_ROUTE = "GET /data/recordings/download/{roomId}/{recordingId}"
ONLY_RECORDINGS = {"data_types": "recordings", "progress": "none"}


def recordings(sim: SimulatorHandle) -> list[dict[str, Any]]:
    return sim.dataset.records("recordings", "experiment", sim.experiment_ids[0])


def expected_bytes(sim: SimulatorHandle, row: dict[str, Any]) -> bytes:
    size = sim.dataset.media_size(row["roomId"], row["recordingId"])
    return sim.dataset.media_bytes(row["roomId"], row["recordingId"], 0, size)


def assert_all_media(sim: SimulatorHandle, out: Path) -> None:
    """Every recording's file is on disk, byte-identical, and described by the manifest."""
    folder = archive_folder(out, sim.experiment_ids[0])
    entries = {m.recording_id: m for m in load_manifest(folder).media}
    rows = recordings(sim)
    assert len(entries) == len(rows)
    for row in rows:
        entry = entries[row["recordingId"]]
        data = (folder / entry.path).read_bytes()
        assert data == expected_bytes(sim, row), row["recordingId"]
        assert (entry.status, entry.bytes) == ("complete", len(data))
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert not list(folder.rglob("*.part"))
    assert "sig=" not in (folder / MANIFEST_NAME).read_text()


def served(sim: SimulatorHandle, route: str, status: str) -> int:
    return int(sim.stats()["requests"].get(route, {}).get(status, 0))


async def archive(sim: SimulatorHandle, out: Path, monitor: Monitor | None = None, **options: Any):
    settings = settings_for(sim, out, **{**ONLY_RECORDINGS, **options})
    async with Downloader(settings) as downloader:
        return await downloader.archive(sim.experiment_ids[0], monitor=monitor)


@pytest.fixture
async def media_sim() -> Any:
    async with serve(MEDIA) as handle:
        yield handle


# -- planning (no network) ------------------------------------------------------------------


def test_plan_takes_the_embedded_url_or_the_download_route() -> None:
    rows = [
        {"recordingId": "r1", "roomId": "a", "downloadUrl": "https://h/x?sig=1", "url": "u"},
        {"recordingId": "r2", "roomId": "a", "url": "https://h/y?sig=2", "fileSize": 10},
        {
            "recordingId": "r%2F3",
            "roomId": "a",
            "downloadPath": "/data/recordings/download/a/r%253",
        },
        {"recordingId": "r4", "roomId": "b", "downloadPath": "/../../admin/delete"},
    ]
    jobs = plan_media(rows)
    assert [job.url for job in jobs] == ["https://h/x?sig=1", "https://h/y?sig=2", None, None]
    assert [job.file_size for job in jobs] == [None, 10, None, None]
    assert jobs[2].mint == ("data", "recordings", "download", "a", "r%3")
    assert jobs[3].mint == ("data", "recordings", "download", "b", "r4")
    assert "sig" not in repr(jobs[0])


def test_plan_names_files_like_the_sdk_and_safely() -> None:
    row = {
        "recordingId": "rec/../1",
        "roomId": "../room",
        "participantName": "Søren K",
        "metadata": {"type": "audio"},
    }
    (job,) = plan_media([row])
    assert job.path == "media/%2E%2E%2Froom/Søren K_audio_rec%2F.%2E%2F1.webm"
    assert media_name({"participantId": "p"}, "x") == "p_video_x.mp4"
    assert media_name({"format": "webm", "participantName": "n"}, "x") == "n_video_x.webm"


def test_plan_skips_rows_it_cannot_name_and_repeats() -> None:
    rows = [{"roomId": "a"}, {"recordingId": "x"}, {"recordingId": "r", "roomId": "a"}] * 2
    assert [job.recording_id for job in plan_media(rows)] == ["r"]


def test_plan_keeps_ids_differing_only_by_case_apart() -> None:
    jobs = plan_media([{"recordingId": "Ab", "roomId": "r"}, {"recordingId": "aB", "roomId": "r"}])
    assert len({job.path.casefold() for job in jobs}) == 2


def test_a_manifest_from_before_media_still_loads(tmp_path: Path) -> None:
    document = {
        "experiment_id": "e",
        "base_url": "http://127.0.0.1",
        "snapshot_end_time": "2026-01-01T00:00:00.000Z",
        "granularity": "experiment",
        "page_size": 10,
        "data_types": [],
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z",
        "streams": [],
    }
    (tmp_path / MANIFEST_NAME).write_bytes(orjson.dumps(document))
    assert load_manifest(tmp_path).media == []


# -- against the simulator ------------------------------------------------------------------


async def test_every_file_arrives_identical_and_the_key_never_reaches_the_media_host(
    media_sim: SimulatorHandle, tmp_path: Path
) -> None:
    rows = recordings(media_sim)
    minted = [row for row in rows if "downloadUrl" not in row]
    assert minted
    assert len(minted) < len(rows)
    manifest = await archive(media_sim, tmp_path)
    assert_all_media(media_sim, tmp_path)
    assert not manifest.failed_media
    stats = media_sim.stats()
    assert stats["media_requests_with_api_key"] == 0
    assert served(media_sim, MINT_ROUTE, "200") == len(minted)
    assert manifest.requests["sent"] == served(media_sim, MINT_ROUTE, "200") + 2


async def test_a_killed_download_resumes_its_part_with_range(
    media_sim: SimulatorHandle, tmp_path: Path
) -> None:
    await cancel_at_first_media_bytes(
        lambda monitor: archive(media_sim, tmp_path, monitor, media_concurrency=2)
    )
    folder = archive_folder(tmp_path, media_sim.experiment_ids[0])
    assert [p for p in folder.rglob("*.part") if p.stat().st_size > 0]
    assert served(media_sim, MEDIA_ROUTE, "206") == 0
    await archive(media_sim, tmp_path)
    assert served(media_sim, MEDIA_ROUTE, "206") >= 1
    assert_all_media(media_sim, tmp_path)


async def test_expired_urls_are_minted_again(media_sim: SimulatorHandle, tmp_path: Path) -> None:
    media_sim.set_faults(FaultSpec.parse("media-expire=0.5"))
    manifest = await archive(media_sim, tmp_path)
    assert not manifest.failed_media
    assert media_sim.stats()["faults"]["media-expire"] > 0
    assert served(media_sim, MEDIA_ROUTE, "403") > 0
    assert_all_media(media_sim, tmp_path)


async def test_minting_again_is_bounded(media_sim: SimulatorHandle, tmp_path: Path) -> None:
    media_sim.set_faults(FaultSpec.parse("media-expire=1"))
    manifest = await archive(media_sim, tmp_path, max_attempts=3)
    minted = [row["recordingId"] for row in recordings(media_sim) if "downloadUrl" not in row]
    assert sorted(m.recording_id for m in manifest.failed_media) == sorted(minted)
    assert served(media_sim, MINT_ROUTE, "200") == 3 * len(minted)
    assert all("refused the signed URL" in (m.error or "") for m in manifest.failed_media)


async def test_a_refused_embedded_url_falls_back_to_minting(
    media_sim: SimulatorHandle, tmp_path: Path
) -> None:
    row = next(r for r in recordings(media_sim) if "downloadUrl" in r)
    tampered = {**row, "downloadUrl": row["downloadUrl"].replace("sig=", "sig=0")}
    (job,) = plan_media([tampered])
    entry = MediaEntry(job.recording_id, job.room_id, job.path)
    settings = settings_for(media_sim, tmp_path)
    async with (
        Downloader(settings) as downloader,
        MediaFetcher(downloader.api, settings, tmp_path, MediaProgress()) as fetcher,
    ):
        await fetcher.fetch(job, entry)
    assert entry.status == "complete"
    assert (tmp_path / job.path).read_bytes() == expected_bytes(media_sim, row)
    assert served(media_sim, MEDIA_ROUTE, "403") == 1
    assert served(media_sim, MINT_ROUTE, "200") == 1


async def test_cut_short_bodies_are_resumed(media_sim: SimulatorHandle, tmp_path: Path) -> None:
    media_sim.set_faults(FaultSpec.parse("media-truncate=0.4,media-reset=0.1"))
    manifest = await archive(media_sim, tmp_path)
    assert not manifest.failed_media
    assert media_sim.stats()["faults"]["media-truncate"] > 0
    assert served(media_sim, MEDIA_ROUTE, "206") > 0
    assert manifest.requests["retries"]["media-truncated"] > 0
    assert_all_media(media_sim, tmp_path)


async def test_a_host_ignoring_range_restarts_from_zero(
    media_sim: SimulatorHandle, tmp_path: Path
) -> None:
    media_sim.set_faults(FaultSpec.parse("media-truncate=0.4,media-norange=0.5"))
    manifest = await archive(media_sim, tmp_path)
    assert not manifest.failed_media
    faults = media_sim.stats()["faults"]
    assert faults["media-norange"] > 0
    assert faults["media-truncate"] > 0
    assert_all_media(media_sim, tmp_path)


# -- the command line -------------------------------------------------------------------------


@pytest.fixture
def cli_sim() -> Iterator[SimulatorHandle]:
    with serve_in_thread(MEDIA) as handle:
        yield handle


def cli(sim: SimulatorHandle, out: Path, *extra: str) -> int:
    return main(
        [
            *("download", sim.experiment_ids[0], "--out", str(out), *cli_options(sim)),
            *("--data-types", "recordings,chat"),
            *extra,
        ]
    )


def test_no_media_then_media_only(
    cli_sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(cli_sim, tmp_path, "--no-media") == 0
    assert manifest_of(tmp_path, cli_sim.experiment_ids[0]).media == []
    assert served(cli_sim, MEDIA_ROUTE, "200") == 0
    before = cli_sim.stats()["requests"]
    assert cli(cli_sim, tmp_path, "--media-only") == 0
    after = cli_sim.stats()["requests"]
    data_routes = {route for route in after if "/media/" not in route and "download" not in route}
    assert all(after[route] == before.get(route) for route in data_routes)
    assert_all_media(cli_sim, tmp_path)
    assert "media files" in capsys.readouterr().out


def test_media_only_without_an_archive_exits_2(cli_sim: SimulatorHandle, tmp_path: Path) -> None:
    assert cli(cli_sim, tmp_path, "--media-only") == 2


def test_a_size_disagreeing_with_file_size_fails_naming_the_recordings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve_in_thread(SimulatorConfig(seed=23, rooms=2, records=20, file_size_skew=7)) as sim:
        assert cli(sim, tmp_path) == 1
        sized = [row["recordingId"] for row in recordings(sim) if "fileSize" in row]
    err = capsys.readouterr().err
    manifest = manifest_of(tmp_path, sim.experiment_ids[0])
    failed = {m.recording_id: m for m in manifest.failed_media}
    assert set(failed) == set(sized)
    assert all("fileSize" in (m.error or "") for m in failed.values())
    assert sized[0] in err
    assert "media INCOMPLETE" in err
    folder = archive_folder(tmp_path, sim.experiment_ids[0])
    assert not list(folder.rglob("*.part"))
    assert all(not (folder / m.path).exists() for m in failed.values())


def test_verify_catches_a_damaged_media_file(
    cli_sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(cli_sim, tmp_path) == 0
    folder = archive_folder(tmp_path, cli_sim.experiment_ids[0])
    assert main(["verify", str(folder)]) == 0
    first, second, third = load_manifest(folder).media[:3]
    damaged = bytearray((folder / first.path).read_bytes())
    damaged[100] ^= 0xFF
    (folder / first.path).write_bytes(bytes(damaged))
    (folder / second.path).write_bytes((folder / second.path).read_bytes()[:-1])
    (folder / third.path).unlink()
    capsys.readouterr()
    assert main(["verify", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"{first.path}: sha256 differs" in out
    assert f"{second.path}: {second.bytes - 1} bytes" in out
    assert f"{third.path}: media file is missing" in out
