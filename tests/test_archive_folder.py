"""The archive folder as colleagues meet it: renamed or copied, shared with a group, checked by
verify, and never left behind empty by a run that fetched nothing."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import archive_folder, cli_options

from hyperstudy_bulk.api import download
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.errors import AuthError
from hyperstudy_bulk.manifest import MANIFEST_NAME, load_manifest
from hyperstudy_bulk.runner import ExperimentNotFound
from hyperstudy_bulk.simulator import SimulatorConfig, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle

CONFIG = SimulatorConfig(seed=31, rooms=2, participants=2, records=20, media_bytes=2_000)
TYPES = ["--data-types", "recordings,chat,events"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    with serve_in_thread(CONFIG) as handle:
        yield handle


def archived(sim: SimulatorHandle, out: Path) -> Path:
    assert (
        main(["download", sim.experiment_ids[0], "--out", str(out), *cli_options(sim), *TYPES]) == 0
    )
    return archive_folder(out, sim.experiment_ids[0])


@pytest.mark.parametrize("how", ["renamed", "copied"])
def test_a_renamed_or_copied_archive_can_be_updated(
    sim: SimulatorHandle, tmp_path: Path, how: str
) -> None:
    folder = archived(sim, tmp_path / "out")
    study = tmp_path / "my-study"
    if how == "renamed":
        folder.rename(study)
    else:
        shutil.copytree(folder, study)
    assert main(["download", "--update", str(study), *cli_options(sim)]) == 0
    assert len(load_manifest(study).snapshots) == 2
    assert main(["verify", str(study)]) == 0
    # Besides the key's request ledger (.hyperstudy/), which stays with --out:
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != ".hyperstudy") == (
        [] if how == "renamed" else [folder.name]
    )
    if how == "copied":
        assert len(load_manifest(folder).snapshots) == 1


def _modes(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): stat.S_IMODE(path.stat().st_mode)
        for path in folder.rglob("*")
        if path.is_file() and ".state" not in path.parts
    }


def test_manifest_and_data_files_share_the_mode_the_umask_gives(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    """Colleagues on shared storage (a umask of 002) can read and verify the whole archive."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hyperstudy_bulk", "download", sim.experiment_ids[0]]
    subprocess.run(
        [*command, "--out", str(out), *cli_options(sim), *TYPES], umask=0o002, check=True
    )
    modes = _modes(archive_folder(out, sim.experiment_ids[0]))
    assert MANIFEST_NAME in modes
    assert any(path.startswith("media/") for path in modes)
    assert set(modes.values()) == {0o664}, modes


def test_in_process_files_share_one_mode_too(sim: SimulatorHandle, tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    modes = _modes(archived(sim, tmp_path))
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_verify_lists_stray_files_of_any_kind(
    sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = archived(sim, tmp_path)
    capsys.readouterr()
    (folder / "events" / "notes.txt").write_text("mine")
    (folder / "media" / "x").mkdir()
    (folder / "media" / "x" / "foo.mp4").write_bytes(b"\0")
    (folder / "extra.csv").write_text("a,b")
    (folder / "events" / ".DS_Store").write_bytes(b"desktop clutter")
    assert main(["verify", str(folder)]) == 1
    out = capsys.readouterr().out
    for stray in ("events/notes.txt", "media/x/foo.mp4", "extra.csv"):
        assert f"{stray}: not listed in the manifest" in out
    assert ".DS_Store" not in out
    assert "3 problem(s)" in out


def test_a_whole_archive_has_no_strays(
    sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = archived(sim, tmp_path)
    assert main(["verify", str(folder)]) == 0
    assert "not listed" not in capsys.readouterr().out


def test_a_file_where_the_archive_folder_belongs_is_named(
    sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive_folder(tmp_path, sim.experiment_ids[0]).write_text("a file")
    assert main(["download", sim.experiment_ids[0], "--out", str(tmp_path), *cli_options(sim)]) == 2
    assert "is a file where the archive's folder belongs" in capsys.readouterr().err


def test_a_failed_download_leaves_no_empty_out_folder(
    sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "archive"
    with pytest.raises(ExperimentNotFound):
        download("no-such-experiment", api_key=sim.api_key, base_url=sim.base_url, out=out)
    with pytest.raises(AuthError):
        download(sim.experiment_ids[0], api_key="hst_test_wrong", base_url=sim.base_url, out=out)
    assert main(["download", "no-such-experiment", "--out", str(out), *cli_options(sim)]) == 2
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_keeps_an_out_folder_that_was_there(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    with pytest.raises(ExperimentNotFound):
        download("no-such-experiment", api_key=sim.api_key, base_url=sim.base_url, out=tmp_path)
    assert tmp_path.is_dir()
