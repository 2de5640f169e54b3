"""The figures a run shows agree with each other and with the archive: requests per type,
records and streams of a re-checked or updated archive, an interrupted stream's records, the
media total known up front, plan's estimate; and the display fits an 80-column terminal and
leaves nothing behind after an early one-line error."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import archive_folder, cli_options, manifest_of, settings_for
from rich.console import Console

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.manifest import load_checkpoint
from hyperstudy_bulk.progress import BarRenderer, MediaProgress, Monitor
from hyperstudy_bulk.simulator import SimulatorConfig, serve, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle

CONFIG = SimulatorConfig(seed=3, rooms=3, records=50)


@pytest.fixture(scope="module")
def counted_sim() -> Iterator[SimulatorHandle]:
    with serve_in_thread(CONFIG) as handle:
        yield handle


def download(sim: SimulatorHandle, out: Path, *extra: str) -> int:
    options = [*cli_options(sim)[:-1], "log", "--no-media"]
    return main(["download", *extra, *options])


def table_rows(text: str) -> dict[str, list[str]]:
    """The summary table's rows by data type: its cells as printed."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


def test_checking_a_complete_archive_counts_its_requests_per_type_and_shows_what_it_holds(
    counted_sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = counted_sim.experiment_ids[0]
    assert download(counted_sim, tmp_path, exp, "--out", str(tmp_path)) == 0
    capsys.readouterr()
    assert download(counted_sim, tmp_path, exp, "--out", str(tmp_path)) == 0
    captured = capsys.readouterr()
    checked = int(captured.err.split("complete; ")[1].split(" requests checked it")[0])
    assert checked > 0
    requests = {name: int(cells[2]) for name, cells in table_rows(captured.out).items()}
    assert sum(requests.values()) == checked
    manifest = manifest_of(tmp_path, exp)
    records = sum(entry.records for entry in manifest.streams)
    last = captured.err.strip().splitlines()[-1]
    assert f"{records:,}/{records:,} records, 11/11 streams, {checked} requests" in last


def test_an_update_counts_records_it_already_held_as_done(
    counted_sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = counted_sim.experiment_ids[0]
    assert download(counted_sim, tmp_path, exp, "--out", str(tmp_path)) == 0
    capsys.readouterr()
    assert download(counted_sim, tmp_path, "--update", str(archive_folder(tmp_path, exp))) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    done, total = last.split("] ")[1].split(" records")[0].split("/")
    assert done == total
    assert int(total.replace(",", "")) > 0  # the listings' rows, all known before
    assert "11/11 streams" in last


async def test_an_interrupted_stream_says_how_many_records_it_has_on_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = SimulatorConfig(seed=9, rooms=2, records=400, latency_ms=2)
    async with serve(config) as sim:
        exp = sim.experiment_ids[0]
        settings = settings_for(
            sim, tmp_path, data_types="eyetracking", page_size=50, concurrency=1, media=False
        )
        async with Downloader(settings) as downloader:
            monitor = downloader.monitor()
            enough = asyncio.Event()
            monitor.on_page = lambda _type, _records: (
                enough.set() if monitor.records >= 300 else None
            )
            task = asyncio.create_task(downloader.archive(exp, monitor=monitor))
            await enough.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    manifest = manifest_of(tmp_path, exp)
    (stream,) = [s for s in manifest.streams if s.data_type == "eyetracking"]
    checkpoint = load_checkpoint(archive_folder(tmp_path, exp), f"{stream.key}#0")
    assert checkpoint is not None
    assert stream.status == "incomplete"
    assert stream.records == checkpoint.records > 0
    assert stream.bytes > 0
    assert stream.open_part is not None
    assert main(["verify", str(archive_folder(tmp_path, exp))]) == 1
    out = capsys.readouterr().out
    assert f"not fetched: interrupted (stream {stream.key})" in out
    assert out.rstrip().endswith(
        f"to finish it, run: hyperstudy-bulk download {exp} --out {tmp_path} "
        "--data-types eyetracking"
    )


async def test_the_media_total_is_known_before_the_first_byte(tmp_path: Path) -> None:
    totals: list[int] = []

    class FirstTotal(MediaProgress):
        def __setattr__(self, name: str, value: Any) -> None:
            if name == "received" and value > 0 and not totals:
                totals.append(self.expected)
            super().__setattr__(name, value)

    config = SimulatorConfig(seed=23, rooms=4, participants=2, records=20, media_bytes=300_000)
    async with serve(config) as sim:
        settings = settings_for(sim, tmp_path, data_types="recordings", media_concurrency=1)
        rows = sim.dataset.records("recordings", "experiment", sim.experiment_ids[0])
        monitor = Monitor(media=FirstTotal())
        async with Downloader(settings) as downloader:
            manifest = await downloader.archive(sim.experiment_ids[0], monitor=monitor)
    sizes = [row["fileSize"] for row in rows if "fileSize" in row]
    assert 0 < len(sizes) < len(rows)
    guess = sum(sizes) // len(sizes)
    assert totals == [sum(sizes) + guess * (len(rows) - len(sizes))]
    on_disk = sum(entry.bytes for entry in manifest.media)
    assert monitor.media.expected == monitor.media.bytes == on_disk
    assert monitor.media.mints_left == 0
    assert monitor.media.requests == sum(1 for row in rows if row.get("downloadPath"))
    assert abs(totals[0] - on_disk) / on_disk < 0.25


def test_plan_says_how_long_the_budget_makes_it_and_what_media_adds(
    counted_sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = counted_sim.experiment_ids[0]
    options = [*cli_options(counted_sim)[:4], "--page-size", "10", "--rate-limit-per-hour", "30"]
    assert main(["plan", exp, *options]) == 0
    out = " ".join(capsys.readouterr().out.split())
    recordings = counted_sim.dataset.total("recordings", "experiment", exp)
    assert "0.0 minutes" not in out
    assert "the rate budget (30/hour, 100/minute per endpoint) makes them take at least" in out
    assert f"Media: {recordings:,} recording files, at most one request each" in out
    assert f"media files │ {recordings:,} │" in out.replace("  ", " ")


def test_an_80_column_terminal_keeps_the_bar_and_the_eta() -> None:
    screen = io.StringIO()
    monitor = Monitor(experiment_id="exp1", page_size=lambda data_type: 100)
    figures = monitor.of("ratings-continuous")
    figures.records, figures.expected, figures.requests, figures.streams = 1500, 3000, 15, 1
    monitor.started -= 10  # 1,500 records in 10 s: 10 s to go at that rate
    console = Console(file=screen, force_terminal=True, width=80, color_system=None)
    BarRenderer(monitor, console).final()
    (line,) = [line for line in screen.getvalue().splitlines() if "ratings" in line]
    assert len(line) <= 80
    assert "━" in line
    assert "1,500/3,000 records" in line
    assert "ETA 0:1" in line


def test_a_refused_key_leaves_no_stray_progress_line(
    counted_sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = counted_sim.experiment_ids[0]
    for mode in ("log", "bar"):
        options = ["--api-key", "hst_test_wrong", "--base-url", counted_sim.base_url]
        code = main(["download", exp, "--out", str(tmp_path), *options, "--progress", mode])
        assert code == 3
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith("hyperstudy-bulk: ")
    assert main(["download", "no-such-exp", *cli_options(counted_sim)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
