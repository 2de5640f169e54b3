"""Never lose or duplicate a record: kill -9 and resume, SIGTERM, torn lines, verify."""

from __future__ import annotations

import asyncio
import os
import random
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    DATA_TYPE_PATHS,
    archive_folder,
    expected_type,
    manifest_of,
    read_type,
    settings_for,
)

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.datatypes import data_type_named
from hyperstudy_bulk.manifest import STATE_DIR
from hyperstudy_bulk.simulator import FaultSpec, SimulatorConfig, serve, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle

CONFIG = SimulatorConfig(seed=41, rooms=3, participants=2, records=300, latency_ms=8)
ARGS = [
    *("--page-size", "100", "--concurrency", "4", "--progress", "none"),
    *("--granularity", "room", "--no-media"),
]
UNLIMITED = [
    "--rate-limit-per-hour",
    "1000000000",
    "--rate-limit-per-minute-per-endpoint",
    "1000000000",
]


def assert_exact(sim: SimulatorHandle, folder: Path) -> None:
    exp = sim.experiment_ids[0]
    for path in DATA_TYPE_PATHS:
        got = sorted(map(repr, read_type(folder, data_type_named(path).folder)))
        assert got == sorted(map(repr, expected_type(sim, path, exp))), path


@pytest.fixture
def threaded_sim() -> Iterator[SimulatorHandle]:
    with serve_in_thread(CONFIG) as handle:
        yield handle


def _command(sim: SimulatorHandle, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hyperstudy_bulk",
        "download",
        sim.experiment_ids[0],
        "--out",
        str(out),
        *ARGS,
        *UNLIMITED,
    ]


def _env(sim: SimulatorHandle) -> dict[str, str]:
    return {**os.environ, "HYPERSTUDY_API_KEY": sim.api_key, "HYPERSTUDY_BASE_URL": sim.base_url}


def _requests(sim: SimulatorHandle) -> int:
    stats = sim.stats()
    return int(stats["total"])


def test_kill_9_at_random_moments_then_resume_gives_every_record_exactly_once(
    threaded_sim: SimulatorHandle, tmp_path: Path
) -> None:
    sim = threaded_sim
    clean = tmp_path / "clean"
    started = time.monotonic()
    subprocess.run(_command(sim, clean), env=_env(sim), check=True, timeout=120)
    duration = time.monotonic() - started
    uninterrupted = _requests(sim)
    sim.reset()

    out = tmp_path / "killed"
    chooser = random.Random(7)
    kills = 0
    for _ in range(6):
        process = subprocess.Popen(_command(sim, out), env=_env(sim))
        try:
            process.wait(timeout=chooser.uniform(0.1, 0.5) * duration)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        else:
            break
    assert kills >= 2, "the kills should land before the download finishes"
    final = subprocess.run(_command(sim, out), env=_env(sim), timeout=120)
    assert final.returncode == 0
    folder = archive_folder(out, sim.experiment_ids[0])
    assert_exact(sim, folder)
    assert main(["verify", str(folder)]) == 0
    assert not list(folder.rglob("*.part"))
    assert not list((folder / STATE_DIR).glob("*.json"))
    # A kill costs at most the pages in flight or fetched ahead but not yet written: 4 streams
    # at a time, each looking 4 pages ahead.
    extra = _requests(sim) - uninterrupted
    assert extra <= kills * 4 * 4, (extra, kills)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_ends_within_seconds_and_the_same_command_resumes(
    threaded_sim: SimulatorHandle, tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    sim = threaded_sim
    out = tmp_path / "a"
    process = subprocess.Popen(_command(sim, out), env=_env(sim), stderr=subprocess.PIPE, text=True)
    folder = archive_folder(out, sim.experiment_ids[0])
    state = folder / STATE_DIR
    while not (state.is_dir() and any(state.iterdir())):
        assert process.poll() is None, "the download finished before it could be stopped"
    # Every further API request now stalls, so the run is still going when the signal lands,
    # however loaded the machine (it used to finish first now and then).
    sim.set_faults(FaultSpec.parse("slow=1,slow-s=60"))
    assert process.poll() is None, "the download finished before it could be stopped"
    process.send_signal(signum)
    _, err = process.communicate(timeout=10)
    assert process.returncode == code
    assert f"stopped by {signum.name}" in err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    manifest = manifest_of(out, sim.experiment_ids[0])
    assert not manifest.complete
    sim.set_faults(FaultSpec.none())
    assert subprocess.run(_command(sim, out), env=_env(sim), timeout=120).returncode == 0
    assert_exact(sim, folder)


async def test_a_torn_last_line_is_cut_back_on_resume(tmp_path: Path) -> None:
    async with serve(SimulatorConfig(seed=9, rooms=3, records=300)) as sim:
        exp = sim.experiment_ids[0]
        settings = settings_for(sim, tmp_path, page_size=50, concurrency=2)
        async with Downloader(settings) as downloader:
            monitor = downloader.monitor()
            halfway = asyncio.Event()
            monitor.on_page = lambda _t, _n: halfway.set() if monitor.records > 3000 else None
            task = asyncio.create_task(downloader.archive(exp, monitor=monitor))
            await halfway.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        folder = archive_folder(tmp_path, exp)
        parts = list(folder.rglob("*.ndjson.part"))
        assert parts
        for part in parts:
            with part.open("ab") as stream:
                stream.write(b'{"id": "torn-half-writ')
        async with Downloader(settings) as downloader:
            manifest = await downloader.archive(exp)
        assert manifest.complete
        assert_exact(sim, folder)
        assert main(["verify", str(folder)]) == 0


async def test_a_complete_archive_is_not_fetched_again(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    exp = sim.experiment_ids[0]
    settings = settings_for(sim, tmp_path, page_size=50)
    async with Downloader(settings) as downloader:
        first = await downloader.archive(exp)
    before = sim.stats()["total"]
    folder = archive_folder(tmp_path, exp)
    files = {p: p.stat().st_mtime_ns for p in folder.rglob("*.ndjson")}
    async with Downloader(settings) as downloader:
        again = await downloader.archive(exp)
    assert again.complete
    assert first.snapshot_end_time == again.snapshot_end_time
    assert sim.stats()["total"] - before <= len(DATA_TYPE_PATHS)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.ndjson")} == files


async def _archive_small(sim: SimulatorHandle, out: Path) -> Path:
    async with Downloader(settings_for(sim, out, page_size=100)) as downloader:
        await downloader.archive(sim.experiment_ids[0])
    return archive_folder(out, sim.experiment_ids[0])


async def test_verify_passes_a_whole_archive(
    sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = await _archive_small(sim, tmp_path)
    assert await asyncio.to_thread(main, ["verify", str(folder)]) == 0
    assert "archive is whole" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["flip", "delete-line", "missing", "extra"])
async def test_verify_catches_damage(
    sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    folder = await _archive_small(sim, tmp_path)
    target = folder / "events" / "experiment-00001.ndjson"
    data = target.read_bytes()
    if damage == "flip":
        target.write_bytes(data[:100] + bytes([data[100] ^ 0x01]) + data[101:])
        expected = "events/experiment-00001.ndjson: sha256 differs from the manifest"
    elif damage == "delete-line":
        target.write_bytes(b"".join(data.splitlines(keepends=True)[1:]))
        expected = "records, manifest says"
    elif damage == "missing":
        target.unlink()
        expected = "events/experiment-00001.ndjson: file is missing (stream events/experiment/"
    else:
        (folder / "events" / "stray.ndjson").write_bytes(b"{}\n")
        expected = "events/stray.ndjson: not listed in the manifest"
    assert await asyncio.to_thread(main, ["verify", str(folder)]) == 1
    out = capsys.readouterr().out
    assert expected in out
    assert "archive is NOT whole" in out


def test_verify_of_a_folder_without_manifest_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(tmp_path)]) == 2
    assert "is not an archive" in capsys.readouterr().err


def test_a_full_disk_stops_cleanly_and_the_same_command_resumes(
    threaded_sim: SimulatorHandle, tmp_path: Path
) -> None:
    """Files may not grow past 300 kB in the first run (the kernel answers EFBIG, as a full
    disk answers ENOSPC); the run stops with exit 4 and one line, and resumes without it."""
    sim = threaded_sim
    out = tmp_path / "a"

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    first = subprocess.run(
        _command(sim, out),
        env=_env(sim),
        preexec_fn=small_files,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert first.returncode == 4
    line = first.stderr.strip().splitlines()[-1]
    assert "cannot write" in line
    assert "run the same command again to resume" in line
    assert "Traceback" not in first.stderr
    assert subprocess.run(_command(sim, out), env=_env(sim), timeout=120).returncode == 0
    folder = archive_folder(out, sim.experiment_ids[0])
    assert_exact(sim, folder)
    assert main(["verify", str(folder)]) == 0


def test_a_full_disk_during_media_stops_cleanly_too(
    threaded_sim: SimulatorHandle, tmp_path: Path
) -> None:
    sim = threaded_sim
    out = tmp_path / "a"
    assert subprocess.run(_command(sim, out), env=_env(sim), timeout=120).returncode == 0
    media_only = [
        *(sys.executable, "-m", "hyperstudy_bulk", "download", sim.experiment_ids[0]),
        *("--out", str(out), "--media-only", "--progress", "none", *UNLIMITED),
    ]

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    first = subprocess.run(
        media_only,
        env=_env(sim),
        preexec_fn=small_files,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert first.returncode == 4
    assert "Traceback" not in first.stderr
    assert "run the same command again to resume" in first.stderr
    assert subprocess.run(media_only, env=_env(sim), timeout=120).returncode == 0
    assert main(["verify", str(archive_folder(out, sim.experiment_ids[0]))]) == 0
