"""The suite holds whatever HYPERSTUDY_* variables, .env or config file its runner has."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENSITIVE = (
    "tests/test_media.py::test_a_size_disagreeing_with_file_size_fails_naming_the_recordings",
    "tests/test_download.py::test_blocking_download_inside_a_running_loop",
    "tests/test_cli.py::test_download_complete_exits_0_and_says_where",
    "tests/test_analysis_report.py::test_report_shows_records_media_and_state",
)
"""Tests that fail when the runner's settings leak in: media off, a config file with an unknown
key, a .env in the working directory with a page size of 0. The last one reads an archive a
module-scoped fixture builds, so it fails when only function-scoped fixtures are isolated."""


def test_tests_ignore_the_runners_environment_dotenv_and_config(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HYPERSTUDY_PAGE_SIZE=0\nHYPERSTUDY_MEDIA=false\n")
    (tmp_path / "mine.toml").write_text('outt = "somewhere"\n')
    environ = {
        **os.environ,
        "HYPERSTUDY_MEDIA": "false",
        "HYPERSTUDY_CONFIG": str(tmp_path / "mine.toml"),
        "HYPERSTUDY_OUT": str(tmp_path / "elsewhere"),
        "HYPERSTUDY_API_KEY": "hst_live_the_runners_own_key",
    }
    tests = [str(ROOT / test) for test in SENSITIVE]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", ROOT, *tests],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert f"{len(SENSITIVE)} passed" in run.stdout
    assert not (tmp_path / "elsewhere").exists()
