"""The command line as a user types it: exit codes, one-line messages, files on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperstudy_bulk.cli import main
from hyperstudy_bulk.simulator import DATA_TYPES, FaultSpec, SimulatorConfig, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle

CONFIG = SimulatorConfig(seed=21, rooms=2, participants=2, records=60)
SECRET = "hst_test_DistinctiveSecretKey0123456789"
FAST = ["--progress", "none", "--retry-backoff", "0.01", "--retry-backoff-max", "0.05"]


@pytest.fixture
def sim() -> Iterator[SimulatorHandle]:
    with serve_in_thread(CONFIG) as handle:
        yield handle


@pytest.fixture
def env(sim: SimulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the simulator's URL and key in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYPERSTUDY_BASE_URL", sim.base_url)
    monkeypatch.setenv("HYPERSTUDY_API_KEY", sim.api_key)
    return tmp_path


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_demo_archives_and_prints_what_it_archived(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--progress", "none"]) == 0
    out = capsys.readouterr().out
    assert "archive complete" in out
    assert "eyetracking" in out
    assert "ratings-continuous" in out
    manifests = list((tmp_path / "demo").glob("*/manifest.json"))
    assert len(manifests) == 1
    report = manifests[0].parent.with_name(f"{manifests[0].parent.name}-report.html")
    assert out.endswith(f"Report of the archive (open it in a browser): {report}\n")
    assert report.read_text().startswith("<!DOCTYPE html>")


def test_download_complete_exits_0_and_says_where(
    env: Path, sim: SimulatorHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = sim.experiment_ids[0]
    assert main(["download", exp, "--out", "arch", *FAST]) == 0
    out = capsys.readouterr().out
    assert "archive complete: " in out
    assert f"arch/{exp}" in out
    assert (env / "arch" / exp / "manifest.json").is_file()


def test_wrong_key_exits_3_fast_with_one_line(
    env: Path,
    sim: SimulatorHandle,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HYPERSTUDY_API_KEY", SECRET)
    before = sim.stats()["total"]
    assert main(["download", sim.experiment_ids[0], "--out", "arch", *FAST]) == 3
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert "HTTP 401" in line
    assert "HYPERSTUDY_API_KEY" in line
    assert SECRET not in captured.out + captured.err
    assert sim.stats()["total"] - before <= 2
    assert not (env / "arch" / sim.experiment_ids[0]).exists()


def test_unknown_experiment_exits_2_and_leaves_nothing(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["download", "noSuchExperiment", "--out", "arch", *FAST]) == 2
    line = one_line(capsys.readouterr().err)
    assert "experiment 'noSuchExperiment' was not found (HTTP 404)" in line
    assert not (env / "arch").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "lots"], "concurrency must be auto or a whole number >= 1"),
        (["--granularity", "session"], "granularity must be one of"),
        (["--data-types", "events,smells"], "unknown data type 'smells'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--base-url", "ftp://x"], "base_url must be an http(s) URL"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    env: Path,
    sim: SimulatorHandle,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    assert main(["download", sim.experiment_ids[0], *args]) == 2
    assert message in one_line(capsys.readouterr().err)


def test_bad_experiment_id_is_refused_before_any_request(
    env: Path, sim: SimulatorHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sim.stats()["total"]
    assert main(["download", "../../etc", *FAST]) == 2
    assert "contains '/'" in one_line(capsys.readouterr().err)
    assert sim.stats()["total"] == before


def test_out_that_is_a_file_exits_2(
    env: Path, sim: SimulatorHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    (env / "taken").write_text("not a folder")
    assert main(["download", sim.experiment_ids[0], "--out", "taken", *FAST]) == 2
    assert "is a file, not a folder" in one_line(capsys.readouterr().err)
    assert main(["download", sim.experiment_ids[0], "--out", "taken/inside", *FAST]) == 2
    message = "--out taken/inside cannot be created: taken is a file, not a folder"
    assert message in one_line(capsys.readouterr().err)


def test_out_that_cannot_be_written_exits_2(
    env: Path, sim: SimulatorHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["download", sim.experiment_ids[0], "--out", "/proc/hyperstudy-archive", *FAST]) == 2
    )
    assert "cannot create --out /proc/hyperstudy-archive" in one_line(capsys.readouterr().err)


def test_malformed_config_file_exits_2_naming_the_line(
    env: Path, sim: SimulatorHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    (env / "bulk.toml").write_text('out = "x"\nconcurrency = \n')
    assert main(["download", sim.experiment_ids[0], "--config", "bulk.toml"]) == 2
    assert "line 2" in one_line(capsys.readouterr().err)


def test_missing_scope_exits_3_naming_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scopes = frozenset(
        {
            "read:events",
            "read:recordings",
            "read:videochat",
            "read:ratings",
            "read:sync",
            "read:components",
            "read:participants",
        }
    )
    with serve_in_thread(SimulatorConfig(seed=4, rooms=1, records=20, scopes=scopes)) as sim:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("HYPERSTUDY_BASE_URL", sim.base_url)
        monkeypatch.setenv("HYPERSTUDY_API_KEY", sim.api_key)
        assert main(["download", sim.experiment_ids[0], "--out", "a", *FAST]) == 3
    err = capsys.readouterr().err
    assert "archive INCOMPLETE" in err
    assert "chat/experiment/" in err
    assert "HTTP 403" in err


def test_persistent_faults_exit_1_naming_the_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = SimulatorConfig(seed=4, rooms=2, records=100, faults=FaultSpec.parse("503=0.4"))
    with serve_in_thread(config) as sim:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("HYPERSTUDY_BASE_URL", sim.base_url)
        monkeypatch.setenv("HYPERSTUDY_API_KEY", sim.api_key)
        code = main(["download", sim.experiment_ids[0], "--out", "a", "--max-attempts", "1", *FAST])
    err = capsys.readouterr().err
    assert code == 1
    assert "archive INCOMPLETE" in err
    assert "HTTP 503" in err
    assert "run the same command again" in err


def test_plan_shows_streams_and_requests_and_writes_nothing(
    env: Path, sim: SimulatorHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = sim.experiment_ids[0]
    assert main(["plan", exp, "--page-size", "100"]) == 0
    out = capsys.readouterr().out
    events = sim.dataset.total("events", "experiment", exp)
    assert f"{events:,}" in out
    assert "granularity experiment" in out
    assert "they fit in the rate budget (1000/hour, 100/minute per endpoint): no waiting" in out
    assert "0.0 minutes" not in out
    assert list(env.iterdir()) == []


def test_the_key_never_appears_in_anything_a_run_produces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    faults = FaultSpec.parse("503=0.05,500-html=0.05,reset=0.02,truncate=0.02,badjson=0.02")
    config = SimulatorConfig(seed=8, rooms=2, records=100, api_key=SECRET, faults=faults)
    with serve_in_thread(config) as sim:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("HYPERSTUDY_BASE_URL", sim.base_url)
        monkeypatch.setenv("HYPERSTUDY_API_KEY", SECRET)
        assert (
            main(
                [
                    "download",
                    sim.experiment_ids[0],
                    "--out",
                    "a",
                    "--verbose",
                    *FAST[2:],
                    "--progress",
                    "log",
                ]
            )
            == 0
        )
    captured = capsys.readouterr()
    assert "retrying after" in captured.err
    assert SECRET not in captured.out + captured.err
    for path in (tmp_path / "a").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("mode", ["log", "bar"])
def test_progress_shows_records_requests_and_429s(
    env: Path,
    sim: SimulatorHandle,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    exp = sim.experiment_ids[0]
    monkeypatch.setenv("COLUMNS", "140")  # a wide terminal shows every column
    assert main(["download", exp, "--out", "arch", *FAST[2:], "--progress", mode]) == 0
    captured = capsys.readouterr()
    records = sum(sim.dataset.total(p, "experiment", exp) for p in DATA_TYPES)
    if mode == "log":
        last = captured.err.strip().splitlines()[-1]
        assert f"{records:,}/{records:,} records" in last
        assert "11/11 streams" in last
        assert "x 429" in last
        assert "ETA" in last
    else:
        for name in ("eyetracking", "ratings-continuous", "rooms"):
            assert name in captured.err
        assert "x429" in captured.err
        assert "req" in captured.err
    assert "archive complete" in captured.out
    assert "Archived experiment" in captured.out


def test_a_second_download_shows_what_the_archive_holds(
    env: Path, sim: SimulatorHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = sim.experiment_ids[0]
    assert main(["download", exp, "--out", "arch", *FAST]) == 0
    capsys.readouterr()
    assert main(["download", exp, "--out", "arch", *FAST]) == 0
    captured = capsys.readouterr()
    events = sim.dataset.total("events", "experiment", exp)
    assert "nothing changed" in captured.err
    assert f"{events:,}" in captured.out
    assert "archive complete" in captured.out
