"""Shared fixtures: a simulator on loopback, settings pointing at it, and archive readers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hyperstudy_bulk.config import Settings, load_settings
from hyperstudy_bulk.manifest import Manifest, load_manifest
from hyperstudy_bulk.progress import MediaProgress, Monitor
from hyperstudy_bulk.simulator import DATA_TYPES, SimulatorConfig, serve
from hyperstudy_bulk.simulator.server import SimulatorHandle
from hyperstudy_bulk.sinks import safe_name


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--crash-seeds",
        type=int,
        default=2,
        help="seeds of the randomised crash test (test_crash_random.py); its slow mode: 300",
    )
    parser.addoption("--crash-seed-start", type=int, default=0, help="its first seed")


@pytest.fixture(autouse=True, scope="session")
def _isolated_from_the_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test builds its settings from what it states: the HYPERSTUDY_* variables of whoever
    runs the suite (HYPERSTUDY_CONFIG among them) are removed, and the working directory is an
    empty folder, so no .env there is read. Tests that want a variable or a .env set their own.
    SLURM array variables go too: inside an array task every download would be a shard.
    Session scope, so that module-scoped fixtures (archives built once per module) are isolated
    as well as tests."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith("HYPERSTUDY") or name.startswith("SLURM_ARRAY_"):
                patch.delenv(name)
        patch.chdir(tmp_path_factory.mktemp("session-cwd"))
        yield


@pytest.fixture(autouse=True)
def _in_an_empty_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Each test runs in an empty folder of its own: what one leaves there, the next never reads."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


SMALL = SimulatorConfig(seed=11, rooms=3, participants=2, records=120)
DATA_TYPE_PATHS = DATA_TYPES


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    async with serve(SMALL) as handle:
        yield handle


UNLIMITED = {
    "rate_limit_per_hour": 10**9,
    "rate_limit_per_minute_per_endpoint": 10**9,
    "retry_backoff": 0.01,
    "retry_backoff_max": 0.05,
}
"""The simulator enforces no limits unless a test asks; neither does the client then, and its
backoff is short, so tests finish fast. Tests of the budget set the limits they exercise."""


def settings_for(sim: SimulatorHandle, out: Path, **options: object) -> Settings:
    """Settings aimed at the simulator, with no environment or .env in the way."""
    return load_settings(
        {**UNLIMITED, "api_key": sim.api_key, "base_url": sim.base_url, "out": str(out), **options},
        environ={},
        cwd=out.parent,
    )


def cli_options(sim: SimulatorHandle) -> list[str]:
    """Command-line options pointing `hyperstudy-bulk download` at the simulator, quietly."""
    return ["--api-key", sim.api_key, "--base-url", sim.base_url, "--progress", "none"]


def archive_folder(out: Path, experiment_id: str) -> Path:
    return out / safe_name(experiment_id)


def read_type(folder: Path, folder_name: str) -> list[dict[str, Any]]:
    """Every record of a data type, in manifest order (stream by stream, part by part)."""
    manifest = load_manifest(folder)
    records: list[dict[str, Any]] = []
    for stream in manifest.streams:
        if stream.data_type != folder_name:
            continue
        for file in stream.files:
            records.extend(
                orjson.loads(line) for line in (folder / file.path).read_bytes().splitlines()
            )
    return records


def expected_type(sim: SimulatorHandle, path: str, experiment_id: str) -> list[dict[str, Any]]:
    """What the API serves for a data type at experiment scope, in its order."""
    return sim.dataset.records(path, "experiment", experiment_id)


def manifest_of(out: Path, experiment_id: str) -> Manifest:
    return load_manifest(archive_folder(out, experiment_id))


async def cancel_at_first_media_bytes(work: Callable[[Monitor], Awaitable[object]]) -> None:
    """Run `work` with a monitor that cancels it as soon as media bytes arrive (a Ctrl-C
    in the middle of a file), and check that it was cancelled."""
    task: asyncio.Task[object] | None = None

    class CancelOnFirstBytes(MediaProgress):
        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            if name == "received" and value > 0 and task is not None:
                task.cancel()

    async def run() -> object:
        return await work(Monitor(media=CancelOnFirstBytes()))

    task = asyncio.create_task(run())
    with pytest.raises(asyncio.CancelledError):
        await task
