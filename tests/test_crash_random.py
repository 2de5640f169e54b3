"""Randomised: late records in several windows, `--update` windows, and downloads killed (as by
kill -9) or cancelled (as by Ctrl-C) at a random durable step, before or after a part's rename,
a checkpoint or a manifest save, then run again. After every finished run the archive holds
every record the server has up to its snapshot exactly once, every part file on disk is listed
by the manifest, and verify passes.

`pytest --crash-seeds 300 tests/test_crash_random.py` is its slow mode (`--crash-seed-start K`
runs seeds K, K+1, ...); the suite runs 2 seeds.
"""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _crash_run import main
from conftest import archive_folder, read_type

from hyperstudy_bulk.manifest import load_manifest
from hyperstudy_bulk.simulator import SimulatorConfig, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle
from hyperstudy_bulk.verify import verify_archive

KILLED, CANCELLED = 137, 130


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        start = metafunc.config.getoption("crash_seed_start")
        metafunc.parametrize("seed", range(start, start + metafunc.config.getoption("crash_seeds")))


@pytest.fixture(scope="module")
def forks() -> Any:
    """Children forked from one server process that has imported the client once (a fresh
    interpreter per run would spend most of the test importing aiohttp)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["_crash_run"])
    return context


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    """One simulator for every seed: each seed archives its own experiment."""
    with serve_in_thread(SimulatorConfig(seed=5, experiments=4, rooms=2, records=60)) as handle:
        yield handle


class Scenario:
    """One seed's archive: its choices of data type, granularity, page size; its runs."""

    def __init__(self, sim: SimulatorHandle, forks: Any, out: Path, seed: int) -> None:
        self.sim, self.forks, self.out, self.random = sim, forks, out, random.Random(seed)
        self.experiment = sim.experiment_ids[seed % len(sim.experiment_ids)]
        self.data_type = self.random.choice(["events", "eyetracking"])
        self.options = {
            "data_types": self.data_type,
            "granularity": self.random.choice(["experiment", "room"]),
            "page_size": self.random.choice([20, 50, 200]),
            "concurrency": self.random.choice([1, 2, 4]),
            "part_max_mb": 1,
        }
        self.history: list[str] = []

    def run(self, *, crash_at: int = 0, mode: str = "kill", **archive: Any) -> int:
        job = {
            "base_url": self.sim.base_url,
            "api_key": self.sim.api_key,
            "out": str(self.out),
            "experiment": self.experiment,
            "options": self.options,
            "update": archive.get("update", False),
            "now": archive.get("now"),
            "crash_at": crash_at,
            "mode": mode,
        }
        child = self.forks.Process(target=main, args=(job,))
        child.start()
        child.join(timeout=120)
        code: int = child.exitcode
        self.history.append(f"{mode}@{crash_at} {archive} -> {code}")
        assert code in (0, KILLED, CANCELLED), self.history
        return code

    def interrupted_then_finished(self, **archive: Any) -> None:
        """A run interrupted at a random point (maybe twice), then runs until one finishes."""
        for _ in range(self.random.choice([1, 1, 2])):
            mode = self.random.choice(["kill", "kill", "cancel"])
            if self.run(crash_at=self.random.randint(1, 80), mode=mode, **archive) == 0:
                break
            archive = {}  # an interrupted --update is finished by the plain command
        while self.run() != 0:
            pass
        self.assert_exact()

    def assert_exact(self) -> None:
        folder = archive_folder(self.out, self.experiment)
        manifest = load_manifest(folder)
        assert manifest.complete, self.history
        served = self.sim.dataset.records(
            self.data_type, "experiment", self.experiment, end_time=manifest.snapshot_end_time
        )
        archived = read_type(folder, self.data_type)
        assert len(archived) == len(served), self.history
        assert sorted(map(repr, archived)) == sorted(map(repr, served)), self.history
        on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*.ndjson*")}
        assert on_disk == {f.path for s in manifest.streams for f in s.files}, self.history
        report = verify_archive(folder)
        assert report.whole, (self.history, [str(p) for p in report.problems])


def test_random_kills_and_cancels_around_refetches_never_lose_or_duplicate(
    sim: SimulatorHandle, forks: Any, tmp_path: Path, seed: int
) -> None:
    scenario = Scenario(sim, forks, tmp_path / "out", seed)
    scenario.interrupted_then_finished()
    exp, data_type = scenario.experiment, scenario.data_type
    # new records for the update (it adds a window; late ones in window 0 wait for a plain run)
    sim.mutate(exp, data_type, append=scenario.random.randint(5, 30))
    # window 1 ends in the future, so records appended after the update still fall inside it
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    scenario.interrupted_then_finished(update=True, now=later)
    for _ in range(2):  # late records in both windows, found and refetched
        sim.mutate(exp, data_type, insert=scenario.random.randint(1, 4))
        sim.mutate(exp, data_type, append=scenario.random.randint(1, 6))
        scenario.interrupted_then_finished()
