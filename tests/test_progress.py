"""What a user sees while a download runs: bars on a terminal, log lines elsewhere."""

from __future__ import annotations

import asyncio
import io

from rich.console import Console

from hyperstudy_bulk.progress import BarRenderer, LogRenderer, Monitor


def test_bars_render_before_a_streams_total_is_known() -> None:
    screen = io.StringIO()
    monitor = Monitor(experiment_id="exp1")
    monitor.of("events")  # a stream has started, its first page not yet in
    BarRenderer(monitor, Console(file=screen, force_terminal=True, width=120)).final()
    assert "0/? records" in screen.getvalue()


async def test_bars_on_a_terminal_show_records_requests_and_429s() -> None:
    screen = io.StringIO()
    monitor = Monitor(experiment_id="exp1", rate_limited=lambda: 2)
    renderer = BarRenderer(monitor, Console(file=screen, force_terminal=True, width=120))
    await renderer.start()
    await asyncio.sleep(0)
    figures = monitor.of("events")
    figures.records, figures.expected, figures.requests = 1500, 3000, 2
    await renderer.stop()
    shown = screen.getvalue()
    assert "1,500/3,000 records" in shown
    assert "2 req" in shown
    assert "2 x429" in shown


def test_a_log_line_carries_records_requests_the_limit_in_flight_429s_and_eta() -> None:
    stream = io.StringIO()
    monitor = Monitor(
        experiment_id="exp1", rate_limited=lambda: 3, retries=lambda: 4, in_flight_limit=lambda: 23
    )
    figures = monitor.of("chat")
    figures.records, figures.expected, figures.requests, figures.streams = 10, 40, 1, 2
    LogRenderer(monitor, stream).final()
    line = stream.getvalue()
    assert "10/40 records" in line
    assert "0/2 streams, 1 requests (23 at once), 3 x 429, 4 retries, ETA" in line
