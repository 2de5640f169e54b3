"""One key, one budget across processes: the request ledger in --out, and a restart within
the hour that must not burst into 429s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import archive_folder

from hyperstudy_bulk.cli import main
from hyperstudy_bulk.ledger import RequestLedger
from hyperstudy_bulk.simulator import SimulatorConfig, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def ledgers(path: Path, clock: Clock, count: int) -> list[RequestLedger]:
    return [
        RequestLedger(path, per_hour=3, per_minute=2, time_scale=60.0, clock=clock)
        for _ in range(count)
    ]


def test_two_processes_share_the_hour_window(tmp_path: Path) -> None:
    clock = Clock()
    first, second = ledgers(tmp_path / "requests.log", clock, 2)
    a = first.try_admit("data/events")
    b = second.try_admit("data/chat")
    c = second.try_admit("data/sync")
    assert all(isinstance(t, str) for t in (a, b, c))
    # The key's 3 an hour are taken, whoever took them: the next waits at least an hour (on
    # a clock 60 times faster, 60 s).
    assert first.try_admit("data/rooms") == pytest.approx(60.0)
    assert isinstance(a, str)
    clock.now += 0.5
    first.ended(a)
    clock.now += 60.0  # an hour after a's response ended: its permit is back, for anyone
    assert isinstance(second.try_admit("data/rooms"), str)


def test_the_endpoint_window_counts_every_process(tmp_path: Path) -> None:
    clock = Clock()
    first, second = ledgers(tmp_path / "requests.log", clock, 2)
    for ledger in (first, second):
        ticket = ledger.try_admit("data/events")
        assert isinstance(ticket, str)
        ledger.ended(ticket)
    assert second.try_admit("data/events") == pytest.approx(1.0)
    assert isinstance(second.try_admit("data/chat"), str)


def test_a_request_whose_process_died_in_flight_counts_for_two_periods(tmp_path: Path) -> None:
    clock = Clock()
    (dead,) = ledgers(tmp_path / "requests.log", clock, 1)
    for _ in range(3):
        assert isinstance(dead.try_admit(f"data/type{_}"), str)
    dead.close()
    clock.now += 61.0  # past an hour: ended requests would be free, these never ended
    (successor,) = ledgers(tmp_path / "requests.log", clock, 1)
    assert successor.try_admit("data/events") > 0
    clock.now += 60.0
    assert isinstance(successor.try_admit("data/events"), str)


def test_a_torn_last_line_is_read_once_whole(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "requests.log"
    (reader,) = ledgers(path, clock, 1)
    reader.open()
    with path.open("ab") as log:
        log.write(b"c other1 1000.000 data/ev")
        log.flush()
        assert reader.held() == 0
        reader.open()
        log.write(b"ents\n")
    reader.open()
    assert reader.held() == 1


def test_a_long_run_keeps_the_log_to_what_still_counts(tmp_path: Path) -> None:
    """Fifty (scaled) hours of requests from two processes: the log is rewritten with what
    still counts, and both, and a newcomer, still see every request of the current hour."""
    clock = Clock()
    path = tmp_path / "requests.log"
    first, second = (
        RequestLedger(
            path, per_hour=10, per_minute=10, time_scale=60.0, clock=clock, compact_bytes=2_000
        )
        for _ in range(2)
    )
    sizes = []
    for _hour in range(50):
        for i in range(10):
            ledger = (first, second)[i % 2]
            ticket = ledger.try_admit(f"data/type{i}")
            assert isinstance(ticket, str)
            clock.now += 0.1
            ledger.ended(ticket)
        sizes.append(path.stat().st_size)
        clock.now += 61.0  # an hour (60 s on this clock) after the last request ended
    assert max(sizes) < 3_000  # 500 requests logged whole would take about 30 KB
    for i in range(10):
        assert isinstance((first, second)[i % 2].try_admit(f"data/type{i}"), str)
    (newcomer,) = ledgers(path, clock, 1)
    newcomer.per_hour = 10
    for ledger in (first, second, newcomer):
        assert ledger.try_admit("data/other") > 0  # the key's 10 of this hour are taken


SCALE = 720.0  # the hour lasts 5 s, the minute 1/12 s
KILL_CONFIG = SimulatorConfig(
    seed=11, rooms=3, participants=2, records=120, rate_limit=SCALE, rate_window="sliding"
)


@pytest.fixture
def limited_sim() -> Iterator[SimulatorHandle]:
    with serve_in_thread(KILL_CONFIG) as handle:
        yield handle


def test_a_restart_right_after_a_kill_waits_for_what_its_predecessor_spent(
    limited_sim: SimulatorHandle, tmp_path: Path
) -> None:
    """~1,300 requests at pages of 5: the first run spends most of a (scaled) hour's 1,000
    and is killed; the second starts at once and must not send past the key's window."""
    sim = limited_sim
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "hyperstudy_bulk",
        "download",
        sim.experiment_ids[0],
        *("--out", str(out), "--page-size", "5", "--no-media", "--progress", "none"),
        *("--rate-limit-time-scale", str(SCALE)),
    ]
    env = {**os.environ, "HYPERSTUDY_API_KEY": sim.api_key, "HYPERSTUDY_BASE_URL": sim.base_url}
    first = subprocess.Popen(command, env=env)
    while sim.stats()["total"] < 800:
        with pytest.raises(subprocess.TimeoutExpired):
            first.wait(timeout=0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = subprocess.run(command, env=env, timeout=120, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    stats = sim.stats()
    assert stats["by_status"].get("429", 0) == 0
    assert stats["total"] > 1_000  # the job did need a second hour window
    assert main(["verify", str(archive_folder(out, sim.experiment_ids[0]))]) == 0


def test_no_ledger_is_written_into_an_empty_out_until_it_holds_something(tmp_path: Path) -> None:
    clock = Clock()
    out = tmp_path / "out"
    out.mkdir()
    (ledger,) = ledgers(out / ".hyperstudy" / "requests.log", clock, 1)
    first = ledger.try_admit("data/events")
    assert isinstance(first, str)
    ledger.ended(first)
    assert list(out.iterdir()) == []  # a run that writes nothing leaves --out empty
    (out / "exp").mkdir()
    (out / "exp" / "manifest.json").write_bytes(b"{}")
    assert isinstance(ledger.try_admit("data/chat"), str)
    (successor,) = ledgers(out / ".hyperstudy" / "requests.log", clock, 1)
    successor.open()
    assert successor.held() == 2  # the request made before the ledger opened is in it
