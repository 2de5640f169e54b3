"""`python -m hyperstudy_bulk.simulator`: what it prints, how it fails, how it stops."""

from __future__ import annotations

import json
import urllib.request

import pytest

from hyperstudy_bulk.simulator import Dataset, SimulatorConfig, serve_in_subprocess
from hyperstudy_bulk.simulator.cli import main, summary_lines


@pytest.mark.parametrize(
    "argv",
    [
        ["--rooms", "0"],
        ["--rate-limit", "sometimes"],
        ["--rate-limit", "-3"],
        ["--faults", "teapot=1"],
        ["--rate-window", "tumbling"],
        ["--port", "99999"],
        ["--bogus"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "error:" in err


def test_summary_lines_are_a_dotenv() -> None:
    ds = Dataset(SimulatorConfig(experiments=2, records=5))
    lines = summary_lines("http://127.0.0.1:8765/api/v3", "hst_test_abc", ds)
    assert lines[0] == "HYPERSTUDY_BASE_URL=http://127.0.0.1:8765/api/v3"
    assert lines[1] == "HYPERSTUDY_API_KEY=hst_test_abc"
    assert [line.split()[2] for line in lines[2:4]] == ds.experiment_ids
    assert all(line.startswith("#") for line in lines[2:])


def test_subprocess_serves_and_stops_cleanly() -> None:
    config = SimulatorConfig(seed=4, records=5)
    with serve_in_subprocess(config) as sim:
        assert sim.api_key.startswith("hst_test_")
        assert sim.experiment_ids == Dataset(config).experiment_ids
        request = urllib.request.Request(
            f"{sim.base_url}/data/rooms/experiment/{sim.experiment_ids[0]}",
            headers={"X-API-Key": sim.api_key},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            rooms = json.loads(response.read())["data"]
        assert rooms == Dataset(config).rooms(sim.experiment_ids[0])
        assert sim.stats()["requests"] == {"GET /data/rooms/experiment/{id}": {"200": 1}}
        process = sim.process
    assert process.returncode == 0
