"""Page size auto: the largest page the server grants, against servers that cap, grant, refuse
with 400 and time out, remembered for resume and --update, and used by plan."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import archive_folder, expected_type, manifest_of, read_type, settings_for

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.errors import ApiError, TransportError
from hyperstudy_bulk.pagesize import PageSizes, PageTooLarge, refused_size, too_large
from hyperstudy_bulk.simulator import SimulatorConfig, serve, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle

TYPES = "events,eyetracking"
ROUTES = {"events": "events", "eyetracking": "eyetracking"}
BIG = SimulatorConfig(seed=5, rooms=2, participants=2, records=900)
"""Enough records that eye-tracking spans several pages of 1000 and events more than one."""


def _refused(details: object) -> ApiError:
    return ApiError("Invalid value for parameter 'limit'", status=400, details=details)


@pytest.mark.parametrize(
    ("details", "size"),
    [
        ({"parameter": "limit", "value": 10000, "expected": "integer <= 2500", "max": 2500}, 2500),
        ({"parameter": "limit", "expected": "integer between 1 and 4000"}, 4000),
        ({"maximum": 3000}, 3000),
        ({"parameter": "limit", "expected": "a smaller number"}, 1000),
        ("no details", 1000),
        (None, 1000),
    ],
)
def test_a_refused_limit_drops_to_the_named_maximum_or_the_documented_1000(
    details: object, size: int
) -> None:
    assert refused_size(_refused(details), 10_000) == size


def test_only_large_pages_shrink_and_never_below_1000() -> None:
    timeout = TransportError("no response", cause="timeout")
    assert too_large(timeout, 10_000)
    assert too_large(ApiError("upstream timeout", status=504), 2000)
    assert too_large(ApiError("too large", status=413), 2000)
    assert not too_large(timeout, 1000)
    assert not too_large(ApiError("unavailable", status=503), 10_000)
    assert not too_large(TransportError("reset", cause="reset"), 10_000)
    assert refused_size(PageTooLarge(timeout), 10_000) == 5000
    assert refused_size(PageTooLarge(timeout), 1500) == 1000
    assert refused_size(_refused(None), 1000) is None
    assert refused_size(ApiError("not found", status=404), 10_000) is None


async def test_streams_of_a_data_type_wait_for_its_first_page_then_use_what_was_granted() -> None:
    sizes = PageSizes(fixed=None, maximum=10_000)
    assert await sizes.first_limit("events") == 10_000
    waiting = asyncio.ensure_future(sizes.first_limit("events"))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert sizes.smaller("events", 10_000, _refused({"max": 2500})) == 2500
    sizes.granted("events", asked=2500, limit=2500, returned=2500, more=True)
    assert await waiting == 2500
    assert await sizes.first_limit("chat") == 10_000  # each data type probes once
    assert sizes.learned == {"events": 2500}


async def test_a_fixed_page_size_is_used_as_is() -> None:
    sizes = PageSizes(fixed=300, maximum=10_000)
    assert await sizes.first_limit("events") == 300
    assert sizes.smaller("events", 300, _refused(None)) is None
    assert sizes.learned == {}


async def _download(sim: SimulatorHandle, out: Path, **options: object) -> None:
    async with Downloader(settings_for(sim, out, data_types=TYPES, **options)) as downloader:
        await downloader.archive(sim.experiment_ids[0])


def _check_records(sim: SimulatorHandle, out: Path) -> None:
    exp = sim.experiment_ids[0]
    folder = archive_folder(out, exp)
    for path, name in ROUTES.items():
        assert read_type(folder, name) == expected_type(sim, path, exp), name
    assert manifest_of(out, exp).complete


def _pages(sim: SimulatorHandle, size: int) -> dict[str, int]:
    exp = sim.experiment_ids[0]
    return {
        name: math.ceil(sim.dataset.total(path, "experiment", exp) / size)
        for path, name in ROUTES.items()
    }


def _requests(out: Path, sim: SimulatorHandle) -> dict[str, int]:
    manifest = manifest_of(out, sim.experiment_ids[0])
    return {s.data_type: s.requests for s in manifest.streams if s.data_type in ROUTES}


async def test_a_server_granting_10000_gets_pages_of_10000(tmp_path: Path) -> None:
    async with serve(replace(BIG, max_page_size=10_000)) as sim:
        await _download(sim, tmp_path, granularity="experiment")
        _check_records(sim, tmp_path)
        manifest = manifest_of(tmp_path, sim.experiment_ids[0])
        assert manifest.page_size == "auto"
        assert manifest.page_sizes["eyetracking"] == 10_000
        assert _requests(tmp_path, sim) == _pages(sim, 10_000)
        assert sim.stats()["by_status"] == {"200": sim.stats()["total"]}


async def test_a_server_capping_at_1000_costs_no_extra_request(tmp_path: Path) -> None:
    async with serve(BIG) as sim:
        await _download(sim, tmp_path, granularity="experiment")
        _check_records(sim, tmp_path)
        assert manifest_of(tmp_path, sim.experiment_ids[0]).page_sizes["eyetracking"] == 1000
        assert _requests(tmp_path, sim) == _pages(sim, 1000)


async def test_a_server_refusing_large_limits_costs_one_request_per_data_type(
    tmp_path: Path,
) -> None:
    config = replace(BIG, max_page_size=2500, oversize_limit="reject")
    async with serve(config) as sim:
        await _download(sim, tmp_path, granularity="room")
        _check_records(sim, tmp_path)
        manifest = manifest_of(tmp_path, sim.experiment_ids[0])
        assert manifest.page_sizes == {"events": 2500, "eyetracking": 2500, "rooms": 2500}
        # one refused probe per data type (rooms listing included), whatever the streams
        assert sim.stats()["by_status"].get("400") == 3


async def test_a_server_timing_out_on_large_pages_halves_the_size_until_it_answers(
    tmp_path: Path,
) -> None:
    config = replace(BIG, max_page_size=2500, oversize_limit="timeout")
    async with serve(config) as sim:
        await _download(sim, tmp_path, granularity="experiment", max_attempts=1)
        _check_records(sim, tmp_path)
        manifest = manifest_of(tmp_path, sim.experiment_ids[0])
        assert manifest.page_sizes["eyetracking"] == 2500  # 10,000 and 5000 timed out
        by_status = sim.stats()["by_status"]
        assert by_status.get("504") == 2 * 3  # asked once each, not retried at the same size
        assert manifest.requests["retries"] == {}


async def test_resume_and_update_start_from_the_size_that_worked(tmp_path: Path) -> None:
    config = replace(BIG, max_page_size=2500, oversize_limit="reject")
    async with serve(config) as sim:
        await _download(sim, tmp_path, granularity="experiment")
        refused = sim.stats()["by_status"]["400"]
        folder = archive_folder(tmp_path, sim.experiment_ids[0])
        async with Downloader(settings_for(sim, tmp_path, data_types=TYPES)) as downloader:
            await downloader.archive(sim.experiment_ids[0], update=True)
        assert sim.stats()["by_status"]["400"] == refused
        assert manifest_of(tmp_path, sim.experiment_ids[0]).page_sizes["events"] == 2500
        assert folder.exists()


def test_plan_estimates_with_the_page_size_the_server_grants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    config = replace(BIG, max_page_size=5000, oversize_limit="reject")
    with serve_in_thread(config) as sim:
        exp = sim.experiment_ids[0]
        args = ["--data-types", "eyetracking", "--api-key", sim.api_key, "--base-url", sim.base_url]
        assert main(["plan", exp, *args]) == 0
        pages = math.ceil(sim.dataset.total("eyetracking", "experiment", exp) / 5000)
    out = capsys.readouterr().out
    assert "pages of 5,000" in out
    assert f"{pages:,} requests at least;" in out
    assert not list(tmp_path.iterdir())
