"""What a user types: the Python API refuses misspelt options, and --help says what each
option takes and does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import cli_options

from hyperstudy_bulk.api import download
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.config import load_settings
from hyperstudy_bulk.errors import ConfigError
from hyperstudy_bulk.simulator import FaultSpec, SimulatorConfig, serve_in_thread


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"output": "my-archive"}, "unknown option 'output' (did you mean 'out'?)"),
        ({"concurency": 2}, "unknown option 'concurency' (did you mean 'concurrency'?)"),
        ({"zzz": 1}, "unknown option 'zzz'"),
    ],
)
def test_download_refuses_a_misspelt_option_before_anything_happens(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        download("exp", api_key="hst_test_x", base_url="http://127.0.0.1:9", **options)
    assert str(refused.value) == message
    assert not Path("hyperstudy-archive").exists()  # the default --out, in the working folder


def test_load_settings_refuses_a_misspelt_option() -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'outt' \(did you mean 'out'\?\)"):
        load_settings({"outt": "x"}, environ={})


def _help(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    assert main([*command, "--help"]) == 0
    return capsys.readouterr().out


def test_download_help_names_what_each_value_is_and_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = " ".join(_help(capsys, "download").split())  # argparse wraps lines
    for shown in (
        "--concurrency N|auto HTTP requests in flight at once, or auto (adapts between 4 and 64 "
        "to the latency) (default: auto)",
        "--page-size N|auto records asked for per page, or auto",
        "--timeout SECONDS",
        "--part-max-mb MIB",
        "--progress {auto,bar,log,none}",
        "--granularity {auto,experiment,room,participant}",
        "--data-types TYPES comma-separated data types to archive (default: all)",
        "--media, --no-media fetch every recording's video or audio file (default: on)",
        "--out DIR folder that receives one sub-folder per experiment (default: "
        "hyperstudy-archive)",
    ):
        assert shown in text
    assert "VALUE" not in text
    assert "(--no-media)" not in text


def test_plan_and_verify_say_what_they_do_and_take(capsys: pytest.CaptureFixture[str]) -> None:
    plan = " ".join(_help(capsys, "plan").split())
    assert "Nothing is written (with --shards N: only the plan the shards will share)." in plan
    assert "EXPERIMENT_ID experiment ids to survey" in plan
    assert "--out DIR with --shards: the download's --out" in plan
    for useless in ("--progress", "--quiet", "--verbose", "--media-only"):
        assert useless not in plan
    verify = " ".join(_help(capsys, "verify").split())
    assert "without any request" in verify
    assert "DIR/EXPERIMENT_ID an archive folder download wrote" in verify


@pytest.mark.parametrize("flag", [["--progress", "none"], ["--quiet"], ["--verbose"]])
def test_plan_refuses_options_that_would_do_nothing(
    capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    assert main(["plan", "exp", *flag]) == 2
    assert f"unrecognized arguments: {flag[0]}" in capsys.readouterr().err


def test_every_simulate_option_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(_help(capsys, "simulate").split())
    for shown in (
        "--host HOST address to listen on (default: 127.0.0.1)",
        "--seed N the same seed serves the same data (default: 0)",
        "--latency-ms MS delay before each response (default: 0.0)",
        "--jitter-ms MS random extra delay",
        "--max-page-size N records per page at most",
    ):
        assert shown in text


def test_no_media_with_media_only_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", "exp", "--no-media", "--media-only", "--api-key", "hst_test_x"]) == 2
    err = capsys.readouterr().err
    assert "media_only (option --media-only)" in err
    assert "(option --no-media)" in err
    with pytest.raises(ConfigError, match="drop one of them"):
        download("exp", api_key="hst_test_x", media=False, media_only=True)


def test_retry_lines_under_verbose_name_their_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = SimulatorConfig(
        seed=21, rooms=2, participants=2, records=60, faults=FaultSpec.parse("503=0.2")
    )
    with serve_in_thread(config) as sim:
        exp = sim.experiment_ids[0]
        args = ["--out", str(tmp_path), "--verbose", "--retry-backoff", "0.01"]
        assert main(["download", exp, *cli_options(sim), *args]) == 0
    retries = [line for line in capsys.readouterr().err.splitlines() if "retrying after" in line]
    assert retries
    for line in retries:
        assert re.match(r"hyperstudy-bulk: (data/[^ ]+( offset \d+)?|media [^ ]+): retrying", line)
    assert any(f"/experiment/{exp} offset " in line for line in retries)
