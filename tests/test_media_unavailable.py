"""Recordings whose egress failed have no file: the archive names them, asks nothing for them,
and is complete without them; an interrupted media download leaves it incomplete."""

from __future__ import annotations

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
from hyperstudy_bulk.manifest import MANIFEST_NAME, load_manifest
from hyperstudy_bulk.media import plan_media
from hyperstudy_bulk.progress import Monitor
from hyperstudy_bulk.simulator import SimulatorConfig, serve, serve_in_thread
from hyperstudy_bulk.simulator.cli import _parser, to_argv
from hyperstudy_bulk.simulator.dataset import Dataset
from hyperstudy_bulk.simulator.server import SimulatorHandle

FAILING = SimulatorConfig(seed=5, rooms=4, participants=2, records=20, failed_recordings=0.3)
MINT_ROUTE = "GET /data/recordings/download/{roomId}/{recordingId}"
MEDIA_ROUTE = "GET /media/{roomId}/{recordingId}"


def rows_of(sim: SimulatorHandle) -> list[dict[str, Any]]:
    return sim.dataset.records("recordings", "experiment", sim.experiment_ids[0])


def requests_to(sim: SimulatorHandle, route: str) -> int:
    return sum(sim.stats()["requests"].get(route, {}).values())


def download(sim: SimulatorHandle, out: Path, *extra: str) -> int:
    return main(
        [
            *("download", sim.experiment_ids[0], "--out", str(out), *cli_options(sim)),
            *("--data-types", "recordings"),
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def failing_sim() -> Iterator[SimulatorHandle]:
    with serve_in_thread(FAILING) as handle:
        yield handle


# -- planning (no network) ------------------------------------------------------------------


def test_a_row_naming_no_file_gets_no_guessed_route() -> None:
    base = {"roomId": "r", "participantName": "Ann", "format": "mp4"}
    failed, embedded, minted = plan_media(
        [
            {**base, "recordingId": "a", "status": "failed", "downloadPath": None},
            {**base, "recordingId": "b", "downloadUrl": "https://store/b?sig=1"},
            {**base, "recordingId": "c", "downloadPath": "/data/recordings/download/r/c"},
        ]
    )
    assert (failed.has_file, failed.mint, failed.recording_status) == (False, None, "failed")
    assert embedded.has_file
    assert embedded.mint == ("data", "recordings", "download", "r", "b")
    assert minted.has_file
    assert minted.mint == ("data", "recordings", "download", "r", "c")


# -- the simulator --------------------------------------------------------------------------


def test_the_simulator_serves_a_few_percent_of_failed_recordings_by_default() -> None:
    dataset = Dataset(SimulatorConfig(seed=3, rooms=60, participants=3, records=1))
    rows = [
        row
        for exp in dataset.experiment_ids
        for row in dataset.records("recordings", "experiment", exp)
    ]
    failed = [row for row in rows if row["status"] == "failed"]
    assert 0.01 <= len(failed) / len(rows) <= 0.06, (len(failed), len(rows))
    for row in failed:
        assert row["downloadPath"] is None
        assert not {"fileSize", "url", "downloadUrl"} & set(row)
    served = [row for row in rows if row not in failed]
    assert all(row.get("downloadPath") or row.get("downloadUrl") for row in served)


def test_the_share_of_failed_recordings_is_a_knob_and_a_flag() -> None:
    none = Dataset(SimulatorConfig(seed=3, rooms=20, failed_recordings=0))
    exp = none.experiment_ids[0]
    assert all(r["status"] != "failed" for r in none.records("recordings", "experiment", exp))
    config = _parser().parse_args(["--failed-recordings", "0.25"])
    assert config.failed_recordings == 0.25
    assert "--failed-recordings=0.3" in to_argv(FAILING)
    with pytest.raises(ValueError, match="failed_recordings"):
        SimulatorConfig(failed_recordings=1.5)


async def test_minting_a_failed_recording_answers_404(tmp_path: Path) -> None:
    async with serve(FAILING) as sim:
        row = next(r for r in rows_of(sim) if r["status"] == "failed")
        settings = settings_for(sim, tmp_path)
        async with Downloader(settings) as downloader:
            route = ("data", "recordings", "download", row["roomId"], row["recordingId"])
            with pytest.raises(Exception, match="404"):
                await downloader.api.get_object("data/recordings/download", route)


# -- archiving ------------------------------------------------------------------------------


def test_recordings_without_a_file_are_listed_counted_and_out_of_the_exit_code(
    failing_sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = rows_of(failing_sim)
    failed = {r["recordingId"] for r in rows if r["status"] == "failed"}
    assert 2 <= len(failed) < len(rows)
    mints_before = requests_to(failing_sim, MINT_ROUTE)
    assert download(failing_sim, tmp_path) == 0
    out = capsys.readouterr().out
    manifest = manifest_of(tmp_path, failing_sim.experiment_ids[0])
    assert manifest.complete
    unavailable = {m.recording_id: m for m in manifest.unavailable_media}
    assert set(unavailable) == failed
    assert {(m.recording_status, m.bytes, m.error) for m in unavailable.values()} == {
        ("failed", 0, None)
    }
    assert not manifest.failed_media
    assert f"; {len(failed)} recordings have no file (status failed)" in out
    assert f"complete, {len(failed)} no file" in out
    minted = [r for r in rows if r.get("downloadPath")]
    assert requests_to(failing_sim, MINT_ROUTE) - mints_before == len(minted)
    folder = archive_folder(tmp_path, failing_sim.experiment_ids[0])
    assert all(not (folder / m.path).exists() for m in unavailable.values())
    assert main(["verify", str(folder)]) == 0
    assert "archive is whole" in capsys.readouterr().out

    before = (requests_to(failing_sim, MINT_ROUTE), requests_to(failing_sim, MEDIA_ROUTE))
    assert download(failing_sim, tmp_path) == 0
    assert (requests_to(failing_sim, MINT_ROUTE), requests_to(failing_sim, MEDIA_ROUTE)) == before
    assert f"{len(failed)} recordings have no file" in capsys.readouterr().out


def test_a_download_path_whose_mint_answers_404_stays_a_failure(
    failing_sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert download(failing_sim, tmp_path, "--no-media") == 0
    folder = archive_folder(tmp_path, failing_sim.experiment_ids[0])
    recordings_file = folder / load_manifest(folder).streams[-1].files[0].path
    lines = recordings_file.read_bytes().splitlines()
    row = orjson.loads(lines[0])
    row["recordingId"] = "gone"
    row["downloadPath"] = f"/data/recordings/download/{row['roomId']}/gone"
    row.pop("downloadUrl", None)
    row.pop("url", None)
    recordings_file.write_bytes(b"\n".join([orjson.dumps(row), *lines[1:]]) + b"\n")
    capsys.readouterr()
    assert download(failing_sim, tmp_path, "--media-only") == 1
    err = capsys.readouterr().err
    assert "media INCOMPLETE: 1 recording file(s) not fetched: gone" in err
    manifest = load_manifest(folder)
    assert not manifest.complete
    (gone,) = manifest.failed_media
    assert (gone.recording_id, gone.status) == ("gone", "failed")
    assert "404" in (gone.error or "")


async def test_ctrl_c_during_media_leaves_the_archive_incomplete_and_verify_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve(FAILING) as sim:
        settings = settings_for(sim, tmp_path, data_types="recordings", media_concurrency=1)

        async def run(monitor: Monitor) -> None:
            async with Downloader(settings) as downloader:
                await downloader.archive(sim.experiment_ids[0], monitor=monitor)

        await cancel_at_first_media_bytes(run)
        experiment = sim.experiment_ids[0]
    folder = archive_folder(tmp_path, experiment)
    manifest = load_manifest(folder)
    assert not manifest.incomplete_streams
    assert manifest.failed_media
    assert not manifest.complete
    assert orjson.loads((folder / MANIFEST_NAME).read_bytes())["complete"] is False
    assert main(["verify", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "None" not in out
    assert "media file not fetched yet: the download stopped before it" in out
    command = f"hyperstudy-bulk download {experiment} --out {tmp_path} --data-types recordings"
    assert f"to finish it, run: {command} --media-only" in out
