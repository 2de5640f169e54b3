"""Progress: the runner updates a `Monitor`; a renderer shows it.

On a terminal a live bar per data type (records, requests, 429s, ETA); off a terminal (batch
jobs, CI logs) one plain line every few seconds with the same figures; nothing with `none`.
Renderers poll the monitor on a timer, so a page costs a few integer additions, not a redraw.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from hyperstudy_bulk.budget import Budget, Wait
from hyperstudy_bulk.config import ProgressMode
from hyperstudy_bulk.manifest import Manifest, StreamEntry


@dataclass
class TypeProgress:
    """One data type's figures, summed over its streams."""

    streams: int = 0
    streams_done: int = 0
    records: int = 0
    expected: int = 0
    """Sum of the server's totals of the streams that have reported one."""
    requests: int = 0
    bytes: int = 0
    planned: int = 0
    """Streams the plan holds (they start one by one, so `streams` grows towards it)."""
    endpoint: str = ""
    """The budget's name for the data type's route."""
    in_transit: int = 0
    """Pages received whose records are not yet counted in `records` (fetched ahead of an
    earlier page, or not yet handled by a busy event loop)."""

    def add_in_transit(self, pages: int) -> None:
        self.in_transit += pages

    def requests_left(self, page_size: int) -> int:
        """At least one request per stream not finished, and enough pages for the records
        the servers' totals still promise, less the pages received and not yet counted (on
        a loaded machine a dozen pages can be paid for and not yet counted: counting their
        requests again put an hour of budget too many in the ETA). Requests on the wire are
        the budget's to subtract (`Budget.seconds_to_send`)."""
        open_streams = max(self.planned, self.streams) - self.streams_done
        if open_streams <= 0:
            return 0
        pages = -(-max(0, self.expected - self.records) // page_size) if page_size > 0 else 0
        return max(open_streams, pages - self.in_transit)


@dataclass
class MediaProgress:
    """The media files' figures: bytes on disk against the bytes expected, and the rate of
    this run's transfers (files already whole count as done but not towards the rate)."""

    files: int = 0
    files_done: int = 0
    failed: int = 0
    unavailable: int = 0
    """Recordings whose row names no file: not counted in `files`."""
    requests: int = 0
    """API requests this run made to mint signed URLs."""
    mints_left: int = 0
    """Files still to fetch that need a signed URL minted: requests under the budget."""
    mint_endpoint: str = ""
    bytes: int = 0
    """Bytes on disk, whole files and parts."""
    expected: int = 0
    """Sum of the files' sizes: fileSize, else Content-Length once a response tells it, and
    until then `guessed_size`."""
    guessed_size: int = 0
    """What a file without a fileSize counts until its size is known: the mean known size."""
    received: int = 0
    """Bytes transferred by this run."""
    started: float | None = None

    def rate(self) -> float:
        """Bytes per second since the first media transfer began."""
        elapsed = time.monotonic() - self.started if self.started is not None else 0.0
        return self.received / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self) -> float | None:
        rate = self.rate()
        if rate <= 0 or self.expected <= self.bytes:
            return None
        return (self.expected - self.bytes) / rate


@dataclass
class Monitor:
    """Live figures of a run. `rate_limited` and `retries` read the client's counters."""

    experiment_id: str = ""
    types: dict[str, TypeProgress] = field(default_factory=dict)
    media: MediaProgress = field(default_factory=MediaProgress)
    started: float = field(default_factory=time.monotonic)
    rate_limited: Callable[[], int] = lambda: 0
    in_flight_limit: Callable[[], int] = lambda: 0
    """Requests allowed in flight now (adaptive with --concurrency auto)."""
    retries: Callable[[], int] = lambda: 0
    on_page: Callable[[str, int], None] = lambda data_type, records: None
    """Called after each page is written (data type folder, records in the page): for
    programs embedding the library that want progress pushed rather than polled."""
    note: Callable[[str], None] = lambda message: None
    """Told of things worth a line in the log (e.g. what checking a complete archive cost)."""
    budget: Budget | None = None
    """The request budget the run is under: what it holds back and how long what is left
    takes under it."""
    page_size: Callable[[str], int] = lambda data_type: 0
    """Records per page a data type (folder name) is fetched at: what its requests left are
    counted in (learned during the run with --page-size auto)."""

    def of(self, data_type: str) -> TypeProgress:
        return self.types.setdefault(data_type, TypeProgress())

    @property
    def records(self) -> int:
        return sum(t.records for t in self.types.values())

    @property
    def expected(self) -> int:
        return sum(t.expected for t in self.types.values())

    @property
    def requests(self) -> int:
        return sum(t.requests for t in self.types.values())

    def eta_seconds(self) -> float | None:
        """Seconds left: the longer of two forecasts. The budget's: the time it needs to send
        the requests left (as `plan` reckons it), so a run about to wait for its hourly budget
        does not promise to end in seconds. The network's: the records left at the rate
        records came while nothing was held back, so neither a pause in the budget inflates
        it nor a slow network leaves it to the budget alone."""
        left = {
            figures.endpoint: figures.requests_left(self.page_size(name))
            for name, figures in self.types.items()
            if figures.endpoint
        }
        budget = self.budget
        forecasts: list[float] = []
        if budget is not None and any(left.values()):
            forecasts.append(budget.seconds_to_send(left))
        active = time.monotonic() - self.started - (budget.held_seconds() if budget else 0.0)
        if self.records and active > 0 and self.expected > self.records:
            forecasts.append((self.expected - self.records) / (self.records / active))
        return max(forecasts) if forecasts else None

    def media_eta_seconds(self) -> float | None:
        """Seconds left for the media files: the transfers at their rate so far, or, when
        longer, the time the budget needs for the signed URLs still to mint."""
        media, budget = self.media, self.budget
        transfers = media.eta_seconds()
        if budget is None or media.mints_left <= 0:
            return transfers
        held = budget.seconds_to_send({media.mint_endpoint: media.mints_left})
        return max(held, transfers or 0.0) if held > 0 else transfers

    def waiting(self) -> Wait | None:
        """Why requests are held right now, if they are."""
        return self.budget.waiting() if self.budget is not None else None

    @property
    def has_data(self) -> bool:
        """Something was fetched or found on disk: a run refused before that (wrong key,
        unknown experiment) has no figures worth a closing line."""
        return self.records > 0 or self.media.files > 0 or self.media.unavailable > 0


class Renderer:
    """Shows a monitor until `stop()`; the base class shows nothing."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        return None

    async def stop(self, *, final: bool = True) -> None:
        """Stop showing; show the closing figures once unless `final` is False (the run
        ended with a one-line error before it had anything to show)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if final:
            self.final()

    def final(self) -> None:
        return None


class LogRenderer(Renderer):
    """A plain line every `interval` seconds on `stream`: for batch jobs and CI logs."""

    def __init__(self, monitor: Monitor, stream: TextIO, interval: float = 5.0) -> None:
        super().__init__(monitor)
        self._stream = stream
        self._interval = interval

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._stream.write(self.line() + "\n")
            self._stream.flush()

    def line(self) -> str:
        m = self.monitor
        elapsed = time.monotonic() - m.started
        eta = m.eta_seconds()
        done = sum(t.streams_done for t in m.types.values())
        streams = sum(t.streams for t in m.types.values())
        line = (
            f"[{m.experiment_id} {elapsed:6.0f}s] {m.records:,}/{m.expected:,} records, "
            f"{done}/{streams} streams, {m.requests:,} requests ({m.in_flight_limit()} at once), "
            f"{m.rate_limited()} x 429, "
            f"{m.retries()} retries, ETA {_duration(eta)}"
        )
        if (wait := m.waiting()) is not None:
            line += f"; {wait}"
        media = m.media
        if media.files:
            line += (
                f"; media {media.files_done}/{media.files} files, "
                f"{media.bytes / 1e6:,.1f}/{media.expected / 1e6:,.1f} MB, "
                f"{media.rate() / 1e6:.1f} MB/s, ETA {_duration(m.media_eta_seconds())}"
            )
        return line

    def final(self) -> None:
        self._stream.write(self.line() + "\n")
        self._stream.flush()


WIDE = 120
"""Terminal columns from which the bars also show requests, 429s and transfer speed."""
NARROW = 80
"""Terminal columns below which the bars keep only the name, the bar and the ETA."""


class BarRenderer(Renderer):
    """A live rich progress bar per data type on a terminal, and a line saying why the run
    waits when the budget holds it. A narrower terminal drops the less important columns
    (requests, 429s, speed, then the counts), never the bar or the ETA. The ETA is the
    monitor's, which counts the budget, not rich's recent-speed guess."""

    def __init__(self, monitor: Monitor, console: Console) -> None:
        super().__init__(monitor)
        width = console.width
        bar = BarColumn(bar_width=None if width >= WIDE else 20 if width >= NARROW else 10)
        eta = TextColumn("{task.fields[eta]:>11}")
        counts = [TextColumn("{task.fields[counts]:>21} records")] if width >= NARROW else []
        extra = (
            [
                TextColumn("{task.fields[requests]:>7,} req"),
                TextColumn("{task.fields[limited]:>4} x429"),
            ]
            if width >= WIDE
            else []
        )
        name = TextColumn("{task.description:<18}")
        self._progress = Progress(name, bar, *counts, *extra, eta, console=console)
        media_counts = [DownloadColumn()] if width >= NARROW else []
        speed = [TransferSpeedColumn()] if width >= WIDE else []
        self._media_bar = Progress(name, bar, *media_counts, *speed, eta, console=console)
        self._status = Text()
        self._tasks: dict[str, TaskID] = {}

    def _view(self) -> Group:
        return Group(self._progress, self._media_bar, self._status)

    async def _run(self) -> None:
        # Transient: the live frame is erased at the end, and `final` prints the last one
        # only when there is something to show (no half-drawn bar after an early error).
        with Live(self._view(), console=self._progress.console, transient=True):
            while True:
                self._refresh()
                await asyncio.sleep(0.2)

    def _refresh(self) -> None:
        monitor = self.monitor
        eta = f"ETA {_duration(monitor.eta_seconds())}"
        for name, figures in monitor.types.items():
            if name not in self._tasks:
                self._tasks[name] = self._progress.add_task(
                    name, total=None, requests=0, limited=0, counts="", eta=""
                )
            total = max(figures.expected, figures.records) or None
            done = figures.streams > 0 and figures.streams_done >= figures.streams
            self._progress.update(
                self._tasks[name],
                completed=figures.records,
                total=total,
                requests=figures.requests,
                limited=monitor.rate_limited(),
                counts=f"{figures.records:,}/{'?' if total is None else f'{total:,}'}",
                eta="done" if done else eta,
            )
        media = monitor.media
        if media.files:
            if "media" not in self._tasks:
                self._tasks["media"] = self._media_bar.add_task("media", total=None, eta="")
            self._media_bar.update(
                self._tasks["media"],
                completed=media.bytes,
                total=max(media.expected, media.bytes) or None,
                eta=f"ETA {_duration(monitor.media_eta_seconds())}"
                if media.bytes < media.expected
                else "done",
            )
        wait = monitor.waiting()
        self._status.plain = str(wait) if wait is not None else ""

    def final(self) -> None:
        """The bars' last state, printed once the live display is gone."""
        self._refresh()
        self._progress.console.print(self._view())


def make_renderer(mode: ProgressMode, monitor: Monitor, *, quiet: bool) -> Renderer:
    """The renderer for `mode` (auto: a bar when stderr is a terminal, else log lines)."""
    if quiet or mode is ProgressMode.NONE:
        return Renderer(monitor)
    if mode is ProgressMode.BAR or (mode is ProgressMode.AUTO and sys.stderr.isatty()):
        return BarRenderer(monitor, Console(stderr=True))
    return LogRenderer(monitor, sys.stderr)


def summary_table(manifest: Manifest, monitor: Monitor) -> Table:
    """The final table: what the archive holds per data type (from its manifest, so a resumed
    or re-checked archive shows all of it), and the requests this run made."""
    table = Table(
        title=f"Archived experiment {manifest.experiment_id}",
        caption="requests: those this run made",
    )
    for column, justify in (
        ("data type", "left"),
        ("streams", "right"),
        ("records", "right"),
        ("requests", "right"),
        ("MB", "right"),
        ("state", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    by_type: dict[str, list[StreamEntry]] = {}
    for entry in manifest.streams:
        by_type.setdefault(entry.data_type, []).append(entry)
    for name, entries in by_type.items():
        broken = sum(entry.status != "complete" for entry in entries)
        table.add_row(
            name,
            str(len({entry.key for entry in entries})),
            f"{sum(entry.records for entry in entries):,}",
            f"{monitor.types[name].requests:,}" if name in monitor.types else "0",
            f"{sum(entry.bytes for entry in entries) / 1e6:.2f}",
            "complete" if not broken else f"{broken} INCOMPLETE",
        )
    if manifest.media:
        failed, unavailable = len(manifest.failed_media), len(manifest.unavailable_media)
        state = "complete" if not failed else f"{failed} FAILED"
        table.add_row(
            "media files",
            str(len(manifest.media) - unavailable),
            "-",
            f"{monitor.media.requests:,}",
            f"{sum(item.bytes for item in manifest.media) / 1e6:.2f}",
            state + (f", {unavailable} no file" if unavailable else ""),
        )
    return table


def no_file_line(manifest: Manifest) -> str | None:
    """'3 recordings have no file (status failed)', or None when every recording has one."""
    unavailable = manifest.unavailable_media
    if not unavailable:
        return None
    statuses = Counter(entry.recording_status or "unknown" for entry in unavailable)
    why = ", ".join(
        f"status {status}" if len(statuses) == 1 else f"{count} status {status}"
        for status, count in statuses.most_common()
    )
    count = len(unavailable)
    return f"{count} recording{'s have' if count > 1 else ' has'} no file ({why})"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
