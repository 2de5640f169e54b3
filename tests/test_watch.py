"""`watch`: a running experiment's archive kept current cycle by cycle, late records found by
bisection for a few requests, the budget respected, a consistent archive after every cycle.
The schedule runs on an injected clock and sleep: no test waits for real time."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import archive_folder, cli_options, manifest_of, read_type, settings_for

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.late import late_spans
from hyperstudy_bulk.simulator import SimulatorConfig, serve
from hyperstudy_bulk.simulator.faults import FaultSpec
from hyperstudy_bulk.simulator.server import SimulatorHandle
from hyperstudy_bulk.verify import verify_archive
from hyperstudy_bulk.watch import Cycle, Watcher, cycle_line

CONFIG = SimulatorConfig(seed=17, rooms=3, participants=2, records=150)
TYPES = "events,eyetracking,chat,rooms"
TIME_ORDERED = ("events", "eyetracking", "chat")


class FakeTime:
    """The watcher's monotonic clock, and the wall clock shared by the watcher and the server,
    moving only when the watcher sleeps: then `between` runs (what the experiment does
    meanwhile, stamped at the server's now), and a second passes before the cycle starts."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.epoch = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
        self.sleeps: list[float] = []
        self.between: Callable[[int], Awaitable[None]] | None = None

    def clock(self) -> float:
        return self.now

    def server_clock(self) -> float:
        return self.epoch

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self.epoch, UTC)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.epoch += seconds
        if self.between is not None:
            await self.between(len(self.sleeps))
        self.epoch += 1.0


def _watcher(
    api: Any, sim: SimulatorHandle, out: Path, time: FakeTime, lines: list[str], **opt: Any
) -> Watcher:
    options: dict[str, Any] = {"data_types": TYPES, "page_size": 40, "media": False, **opt}
    settings = settings_for(sim, out, **options)
    return Watcher(
        api,
        settings,
        sim.experiment_ids[0],
        interval=30,
        say=lines.append,
        monitor=lambda: Downloader(settings).monitor(),
        clock=time.clock,
        sleep=time.sleep,
        wall=time.wall,
    )


def _sorted(records: list[dict[str, Any]]) -> list[bytes]:
    return sorted(map(orjson.dumps, records))


def _served(sim: SimulatorHandle, path: str, end: str, **scope: Any) -> list[dict[str, Any]]:
    if "room" in scope:
        return sim.dataset.records(path, "room", scope["room"], end_time=end)
    return sim.dataset.records(path, "experiment", sim.experiment_ids[0], end_time=end)


async def test_watch_keeps_the_archive_equal_to_the_server_cycle_by_cycle(tmp_path: Path) -> None:
    time = FakeTime()
    async with serve(CONFIG, clock=time.server_clock) as sim:
        exp = sim.experiment_ids[0]
        folder = archive_folder(tmp_path, exp)
        added: dict[int, dict[str, int]] = {}
        snapshots: list[str] = []

        async def experiment_runs(cycle: int) -> None:
            if cycle > 1:  # the previous cycle's archive is whole whenever verify runs
                assert verify_archive(folder).whole
                snapshots.append(manifest_of(tmp_path, exp).snapshot_end_time)
            plan = {
                1: {"events": (12, 0), "chat": (2, 0)},
                2: {"events": (3, 4), "eyetracking": (0, 5)},  # (appended, late)
                3: {},
                4: {"eyetracking": (7, 1), "chat": (0, 1)},
            }[cycle]
            added[cycle] = {}
            for data_type, (append, insert) in plan.items():
                got = sim.mutate(exp, data_type, append=append, insert=insert)
                assert len(got) == append + insert
                added[cycle][data_type] = len(got)

        time.between = experiment_runs
        lines: list[str] = []
        async with Downloader(settings_for(sim, tmp_path)) as downloader:
            watcher = _watcher(downloader.api, sim, tmp_path, time, lines)
            await watcher.run(cycles=4)
        manifest = manifest_of(tmp_path, exp)
        assert manifest.complete
        for path in TIME_ORDERED:
            archived = read_type(folder, path)
            assert _sorted(archived) == _sorted(_served(sim, path, manifest.snapshot_end_time))
            assert len(set(_sorted(archived))) == len(archived)
        assert verify_archive(folder).whole
        assert lines[0].startswith(f"watching {exp} into {folder} every 30s")
        cycle_lines = lines[1:]
        expected = ["  ".join(f"+{n} {name}" for name, n in added[c].items()) for c in (1, 2, 4)]
        assert [line.split("  (total")[0][10:] for line in cycle_lines] == expected
        total = sum(s.records for s in manifest.streams)
        requests = _requests(lines[-1])
        assert cycle_lines[-1].endswith(f"(total {total:,} records, {requests} requests)")
        late = [s for s in manifest.streams if s.data_type == "eyetracking" and s.window == 0]
        assert len(late[0].files) > 1  # the late samples went into a new part of window 0
        assert time.sleeps == [30.0] * 4


def _requests(line: str) -> int:
    return int(line.rsplit(", ", 1)[1].split()[0])


async def test_a_late_record_in_a_long_stream_costs_a_few_requests(tmp_path: Path) -> None:
    config = SimulatorConfig(seed=17, rooms=2, participants=2, records=250)
    time = FakeTime()
    async with serve(config, clock=time.server_clock) as sim:
        exp = sim.experiment_ids[0]
        lines: list[str] = []
        cycles: list[Cycle] = []

        async def one_late_record(cycle: int) -> None:
            if cycle == 1:
                sim.mutate(exp, "events", insert=1)
            sim.reset()

        time.between = one_late_record
        async with Downloader(settings_for(sim, tmp_path)) as downloader:
            watcher = _watcher(
                downloader.api, sim, tmp_path, time, lines, data_types="events", page_size=20
            )
            original = watcher.cycle

            async def recorded() -> Cycle:
                cycles.append(await original())
                return cycles[-1]

            watcher.cycle = recorded  # type: ignore[method-assign]
            await watcher.run(cycles=2)
        folder = archive_folder(tmp_path, exp)
        pages = len(sim.dataset.records("events", "experiment", exp)) // 20
        assert pages >= 50
        late, unchanged = cycles
        assert late.added == {"events": 1}
        # 2 totals (now, before the snapshot), a bisection of log2(pages), the page itself
        assert late.requests <= 2 + math.ceil(math.log2(pages)) + 1
        assert unchanged.requests == 1
        assert sim.stats()["total"] == 1  # the counters were reset before the last cycle
        end = manifest_of(tmp_path, exp).snapshot_end_time
        assert _sorted(read_type(folder, "events")) == _sorted(_served(sim, "events", end))


async def test_bisection_asks_only_the_halves_that_differ() -> None:
    archived = [f"2026-01-01T00:00:{s:02d}.000Z" for s in range(0, 60)]
    server = sorted([*archived, "2026-01-01T00:00:41.500Z"])
    asked: list[tuple[str | None, str]] = []

    async def count(start: str | None, end: str) -> int:
        asked.append((start, end))
        return sum(1 for s in server if (start is None or s >= start) and s < end)

    end = "2026-01-01T00:01:00.000Z"
    spans = await late_spans(archived, None, end, len(server), count, page_size=8)
    assert len(asked) == 4  # 60 -> 30 -> 15 -> 8 -> 4 records: one request per halving
    assert len(spans) == 1
    start, stop = spans[0]
    assert start is not None
    assert start <= "2026-01-01T00:00:41.500Z" < stop
    assert await count(start, stop) <= 8


async def test_a_short_interval_is_stretched_to_the_budget_without_429s(tmp_path: Path) -> None:
    limited = SimulatorConfig(seed=17, rooms=2, participants=2, records=20, rate_limit="production")
    time = FakeTime()
    async with serve(limited, clock=time.server_clock) as sim:
        lines: list[str] = []
        options: dict[str, Any] = {
            "rate_limit_per_hour": 100,
            "data_types": "events,eyetracking,chat,sync",
            "page_size": 1000,
        }
        async with Downloader(settings_for(sim, tmp_path, **options)) as downloader:
            watcher = _watcher(downloader.api, sim, tmp_path, time, lines, **options)
            await watcher.run(cycles=0)
            archived = sim.stats()["total"]
            assert archived < 100  # the first archive fits in the hour's budget
            await watcher.run(cycles=3)
        assert "every 30s would need 480 requests an hour, more than the key's 100" in lines[0]
        assert "stretched to 144s" in lines[0]
        assert time.sleeps == [144.0] * 3
        # One request per time-ordered type and cycle: 4 * 3600 / 144 = 100 an hour.
        assert sim.stats()["total"] - archived == 3 * 4
        assert sim.stats()["rate_limited"] == 0


async def test_cancelling_during_a_cycle_ends_after_it_with_a_whole_archive(
    tmp_path: Path,
) -> None:
    time = FakeTime()
    async with serve(CONFIG, clock=time.server_clock) as sim:
        exp = sim.experiment_ids[0]
        task: asyncio.Task[None] | None = None

        async def stop_mid_cycle(cycle: int) -> None:
            sim.mutate(exp, "events", append=5, insert=2)
            assert task is not None
            asyncio.get_running_loop().call_soon(task.cancel)

        time.between = stop_mid_cycle
        lines: list[str] = []
        async with Downloader(settings_for(sim, tmp_path)) as downloader:
            watcher = _watcher(downloader.api, sim, tmp_path, time, lines)
            task = asyncio.create_task(watcher.run())
            with pytest.raises(asyncio.CancelledError):
                await task
        folder = archive_folder(tmp_path, exp)
        assert verify_archive(folder).whole
        manifest = manifest_of(tmp_path, exp)
        assert manifest.complete
        end = manifest.snapshot_end_time
        assert _sorted(read_type(folder, "events")) == _sorted(_served(sim, "events", end))
        assert len(manifest.snapshots) == 2  # the cycle's update finished


async def test_watching_again_continues_and_a_subset_stays_inside(tmp_path: Path) -> None:
    time = FakeTime()
    async with serve(CONFIG, clock=time.server_clock) as sim:
        exp = sim.experiment_ids[0]
        rooms = [r["id"] for r in sim.dataset.rooms(exp)]

        async def both_rooms_grow(cycle: int) -> None:
            sim.mutate(exp, "events", append=4, room_id=rooms[0])
            sim.mutate(exp, "events", append=6, room_id=rooms[1])

        lines: list[str] = []
        async with Downloader(settings_for(sim, tmp_path)) as downloader:
            first = _watcher(downloader.api, sim, tmp_path, time, lines, room=rooms[1])
            await first.run(cycles=0)
            sim.reset()
            time.between = both_rooms_grow
            again = _watcher(downloader.api, sim, tmp_path, time, lines, room=rooms[1])
            await again.run(cycles=1)
        folder = archive_folder(tmp_path, exp)
        end = manifest_of(tmp_path, exp).snapshot_end_time
        archived = read_type(folder, "events")
        assert archived == _served(sim, "events", end, room=rooms[1])
        assert lines[-1].split("  (total")[0][10:] == "+6 events"
        # Started again on a complete archive, nothing was fetched again: the cycle asked each
        # type's total of the chosen room (events: now, before the snapshot, then its new
        # window), then the room listing (an update), never the experiment's records.
        assert sim.stats()["requests"] == {
            "GET /data/events/room/{id}": {"200": 3},
            "GET /data/eyetracking/room/{id}": {"200": 1},
            "GET /data/chat/room/{id}": {"200": 1},
            "GET /data/rooms/experiment/{id}": {"200": 1},
        }


async def test_a_failed_cycle_is_reported_and_the_next_one_catches_up(tmp_path: Path) -> None:
    time = FakeTime()
    async with serve(CONFIG, clock=time.server_clock) as sim:
        exp = sim.experiment_ids[0]

        async def outage_then_recovery(cycle: int) -> None:
            sim.mutate(exp, "chat", append=2)
            sim.set_faults(FaultSpec.parse("503=1" if cycle == 1 else ""))

        lines: list[str] = []
        time.between = outage_then_recovery
        async with Downloader(settings_for(sim, tmp_path)) as downloader:
            watcher = _watcher(downloader.api, sim, tmp_path, time, lines, max_attempts=2)
            await watcher.run(cycles=2)
        assert "cycle failed (" in lines[1]
        assert "HTTP 503" in lines[1]
        assert lines[1].endswith("the next one retries")
        assert lines[2].split("  (total")[0][10:] == "+4 chat"
        folder = archive_folder(tmp_path, exp)
        assert verify_archive(folder).whole
        end = manifest_of(tmp_path, exp).snapshot_end_time
        assert _sorted(read_type(folder, "chat")) == _sorted(_served(sim, "chat", end))


def test_cycle_line_is_silent_when_nothing_arrived() -> None:
    moment = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
    quiet = Cycle(moment, {}, 15234, 9)
    assert cycle_line(quiet, verbose=False) is None
    assert (
        cycle_line(quiet, verbose=True) == "12:00:30  no change  (total 15,234 records, 9 requests)"
    )
    busy = Cycle(moment, {"events": 42, "eyetracking": 310, "chat": 3}, 15234, 12)
    assert cycle_line(busy, verbose=False) == (
        "12:00:30  +42 events  +310 eyetracking  +3 chat  (total 15,234 records, 12 requests)"
    )


async def test_watch_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        base = ["watch", exp, *cli_options(sim), "--out", str(tmp_path), "--no-media"]
        assert await asyncio.to_thread(main, [*base, "--cycles", "0", "--data-types", TYPES]) == 0
        assert manifest_of(tmp_path, exp).complete
        assert f"watching {exp}" in capsys.readouterr().out
        assert await asyncio.to_thread(main, [*base, "--interval", "soon"]) == 2
        assert "--interval must be a duration" in capsys.readouterr().err
