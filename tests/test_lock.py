"""One writer per archive: a second run, in another process or thread, is refused at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import archive_folder, cli_options, settings_for

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.errors import BusyError, StorageError
from hyperstudy_bulk.lock import LOCK_NAME, archive_lock, exclusive
from hyperstudy_bulk.simulator import SimulatorConfig, serve, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle
from hyperstudy_bulk.verify import verify_archive

CONFIG = SimulatorConfig(seed=5, rooms=2, participants=2, records=60)

HOLDER = """
import sys
from pathlib import Path
from hyperstudy_bulk.lock import archive_lock
with archive_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def threaded_sim() -> Iterator[SimulatorHandle]:
    with serve_in_thread(CONFIG) as handle:
        yield handle


def test_a_second_process_is_refused_with_exit_5_and_nothing_touched(
    threaded_sim: SimulatorHandle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    exp = threaded_sim.experiment_ids[0]
    folder = archive_folder(tmp_path / "arch", exp)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        before = threaded_sim.stats()["total"]
        argv = ["download", exp, "--out", str(tmp_path / "arch"), *cli_options(threaded_sim)]
        assert main(argv) == 5
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        assert f"the archive {folder} is being written by another hyperstudy-bulk run" in lines[0]
        assert f"(pid {holder.pid})" in lines[0]
        assert threaded_sim.stats()["total"] == before
        assert [p.name for p in folder.iterdir()] == [LOCK_NAME]
    finally:
        holder.kill()  # dies holding the lock: the kernel releases it, nothing stale remains
        holder.wait()
    assert main(argv) == 0
    assert verify_archive(folder).whole


async def test_two_downloads_of_one_archive_in_one_program_never_write_together(
    tmp_path: Path,
) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        async with Downloader(settings_for(sim, tmp_path)) as downloader:
            first, second = await asyncio.gather(
                downloader.archive(exp), downloader.archive(exp), return_exceptions=True
            )
    assert not isinstance(first, BaseException)
    assert first.complete
    assert isinstance(second, BusyError)
    assert verify_archive(archive_folder(tmp_path, exp)).whole


def test_threads_exclude_each_other(tmp_path: Path) -> None:
    """flock belongs to the open file: a thread of the same process is refused too."""
    path = tmp_path / "out" / "shard.lock"
    refused: list[BaseException] = []

    def second() -> None:
        try:
            with exclusive(path, what="--out out"):
                pass
        except BusyError as error:
            refused.append(error)

    with exclusive(path, what="--out out"):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert [str(e).split(";")[0] for e in refused] == [
        f"--out out is being written by another hyperstudy-bulk run (pid {os.getpid()})"
    ]
    with exclusive(path, what="--out out"):  # released on leaving the block
        pass


def test_a_folder_made_only_for_the_lock_is_removed(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    with archive_lock(folder):
        assert (folder / LOCK_NAME).is_file()
    assert not folder.exists()
    with archive_lock(folder):
        (folder / "manifest.json").write_text("{}")
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME, "manifest.json"]


def test_the_lock_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with (
        pytest.raises(StorageError, match="cannot write"),
        exclusive(tmp_path / "file" / "x.lock", what="x"),
    ):
        pass
