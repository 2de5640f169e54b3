"""Transient faults and rate limits: every one survived, the archive exact, exit code 0."""

from __future__ import annotations

from datetime import UTC, datetime
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
from hyperstudy_bulk.datatypes import data_type_named
from hyperstudy_bulk.simulator import FaultSpec, SimulatorConfig, serve

BASE = {"seed": 31, "rooms": 2, "participants": 2, "records": 80}
SNAPSHOT = datetime(2026, 6, 1, tzinfo=UTC)
"""A fixed snapshot (after all the simulator's records): the query strings, and so the
simulator's fault draws, are then the same on every run."""


async def _archive_and_check(
    config: SimulatorConfig, out: Path, **options: object
) -> dict[str, object]:
    """Archive the simulator's experiment; assert it is complete and exact; return its stats."""
    async with serve(config) as sim:
        exp = sim.experiment_ids[0]
        async with Downloader(settings_for(sim, out, page_size=60, **options)) as downloader:
            manifest = await downloader.archive(exp, now=SNAPSHOT)
        assert manifest.complete, [s.error for s in manifest.incomplete_streams]
        folder = archive_folder(out, exp)
        for path in DATA_TYPE_PATHS:
            assert read_type(folder, data_type_named(path).folder) == expected_type(sim, path, exp)
        return {"sim": sim.stats(), "manifest": manifest_of(out, exp)}


@pytest.mark.parametrize(
    ("spec", "cause"),
    [
        ("500=0.2", "http-500"),
        ("502-html=0.2", "http-502"),
        ("503=0.2", "http-503"),
        ("504-html=0.2", "http-504"),
        ("reset=0.1", "reset"),
        ("truncate=0.1", "truncated"),
        ("badjson=0.1", "bad-json"),
    ],
)
async def test_each_transient_fault_is_retried_to_an_exact_archive(
    tmp_path: Path, spec: str, cause: str
) -> None:
    config = SimulatorConfig(**BASE, faults=FaultSpec.parse(spec))
    result = await _archive_and_check(config, tmp_path)
    kind = spec.split("=")[0]
    assert result["sim"]["faults"][kind] > 0  # type: ignore[index]
    retries = result["manifest"].requests["retries"]  # type: ignore[attr-defined]
    if kind != "reset":  # aiohttp itself retries a reset on a reused connection, once
        assert retries[cause] > 0, retries


async def test_responses_slower_than_the_timeout_are_retried(tmp_path: Path) -> None:
    config = SimulatorConfig(
        **BASE, faults=FaultSpec.parse("slow=0.08,slow-s=5,spike=0.1,spike-ms=50")
    )
    result = await _archive_and_check(config, tmp_path, timeout=1.0)
    assert result["manifest"].requests["retries"]["timeout"] > 0  # type: ignore[attr-defined]


async def test_all_faults_mixed(tmp_path: Path) -> None:
    spec = (
        "500=0.03,502-html=0.03,503=0.03,504=0.03,reset=0.03,truncate=0.03,badjson=0.03,"
        "short-page=0.05,spike=0.05,spike-ms=20,429-burst=0.01,burst=2,retry-after=1"
    )
    result = await _archive_and_check(
        SimulatorConfig(**BASE, faults=FaultSpec.parse(spec)), tmp_path
    )
    assert result["sim"]["during_retry_after"] == 0  # type: ignore[index]


async def test_a_429_burst_pauses_every_worker_for_retry_after(tmp_path: Path) -> None:
    config = SimulatorConfig(**BASE, faults=FaultSpec.parse("429-burst=0.1,burst=3,retry-after=1"))
    result = await _archive_and_check(config, tmp_path)
    stats = result["sim"]
    assert stats["rate_limited"] > 0  # type: ignore[index]
    assert stats["during_retry_after"] == 0  # type: ignore[index]
    assert result["manifest"].requests["rate_limited"] > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("window", ["fixed", "sliding"])
async def test_default_budget_never_draws_a_429_from_production_limits(
    tmp_path: Path, window: str
) -> None:
    """Production limits on a clock 3600x faster (the hour lasts 1 s, the minute 1/60 s); the
    client keeps its default limits on the same clock. Over 1000 requests: several windows."""
    config = SimulatorConfig(seed=12, rooms=3, records=150, rate_limit=3600.0, rate_window=window)  # type: ignore[arg-type]
    async with serve(config) as sim:
        exp = sim.experiment_ids[0]
        settings = settings_for(
            sim,
            tmp_path,
            page_size=10,
            rate_limit_per_hour=1000,
            rate_limit_per_minute_per_endpoint=100,
            rate_limit_time_scale=3600,
        )
        async with Downloader(settings) as downloader:
            manifest = await downloader.archive(exp)
        stats = sim.stats()
    assert manifest.complete
    assert stats["total"] > 1000
    assert stats["rate_limited"] == 0
    assert read_type(archive_folder(tmp_path, exp), "events") == expected_type(sim, "events", exp)


async def test_rate_limit_headers_keep_a_client_allowed_too_much_under_the_limit(
    tmp_path: Path,
) -> None:
    # The minute lasts 2 s: 100 requests per 2 s per endpoint. The client is told it may send
    # far more, but X-RateLimit-Remaining/Reset make it pause before the server has to refuse.
    config = SimulatorConfig(seed=12, rooms=2, records=100, rate_limit=30.0, rate_window="sliding")
    async with serve(config) as sim:
        exp = sim.experiment_ids[0]
        settings = settings_for(sim, tmp_path, page_size=20, data_types="eyetracking")
        async with Downloader(settings) as downloader:
            manifest = await downloader.archive(exp)
            paused = downloader.api.budget.counters.paused_seconds
        stats = sim.stats()
    assert manifest.complete
    assert stats["total"] > 100
    assert paused > 0
    assert stats["rate_limited"] <= stats["total"] // 100
    assert stats["during_retry_after"] == 0
    assert read_type(archive_folder(tmp_path, exp), "eyetracking") == expected_type(
        sim, "eyetracking", exp
    )
