"""`hyperstudy-bulk watch`: keep the archive of a running experiment current.

A driver over what exists, not a new fetch path. It archives the experiment (or resumes, or
finds a complete archive), then every interval runs one cycle:

1. For each time-ordered data type, one request: the server's total of the selection's records
   stamped before now. Equal to what the archive holds: nothing arrived (an unchanged cycle costs
   exactly these requests; for a subset, one per chosen room or participant).
2. Where it moved, one more request: the total before the last snapshot. More than the archive
   holds: late records; `late.add_late_records` locates them by bisection and adds them.
3. Types with records after the snapshot: the `--update` of `runner.archive_experiment`, for
   those types and the listings, adds a window up to now.

After every cycle the archive is complete and its manifest true (`verify` passes between
cycles); a cycle that was cut short by an error is finished by the next. An interval shorter
than the hourly budget allows for the unchanged cycles is stretched (and said at the start),
so watching never draws 429s. Cancelling (Ctrl-C, SIGTERM) during a cycle lets the cycle
finish first; during the wait it stops at once. The clock and sleep are passed in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from hyperstudy_bulk.client import ApiClient
from hyperstudy_bulk.config import Settings
from hyperstudy_bulk.datatypes import PARTICIPANTS, ROOMS, DataType
from hyperstudy_bulk.errors import ConfigError, HyperStudyBulkError, ends_run
from hyperstudy_bulk.late import add_late_records
from hyperstudy_bulk.manifest import MANIFEST_NAME, Manifest, StreamEntry, load_manifest
from hyperstudy_bulk.progress import Monitor
from hyperstudy_bulk.runner import (
    archive_experiment,
    experiment_folder,
    prepare_folder,
    spec_of,
    time_ordered_holdings,
    total_of,
)
from hyperstudy_bulk.selection import Selection
from hyperstudy_bulk.timespec import iso_utc

T = TypeVar("T")


@dataclass(frozen=True)
class Cycle:
    """What one cycle did: records added per data type, the archive's records after it, and
    the requests it made."""

    moment: datetime
    added: dict[str, int]
    total: int
    requests: int


def cycle_line(cycle: Cycle, *, verbose: bool) -> str | None:
    """`12:00:30  +42 events  +3 chat  (total 15,234 records)`; None for a cycle that added
    nothing, unless verbose."""
    added = "  ".join(f"+{n:,} {name}" for name, n in cycle.added.items() if n)
    if not added and not verbose:
        return None
    clock = cycle.moment.astimezone(UTC).strftime("%H:%M:%S")
    what = added or "no change"
    return f"{clock}  {what}  (total {cycle.total:,} records, {cycle.requests} requests)"


def cycle_requests(settings: Settings, selection: Selection, experiment_id: str) -> int:
    """Requests of a cycle on an unchanged experiment: one per time-ordered type and probe."""
    return sum(
        len(selection.probe_specs(experiment_id, data_type))
        for data_type in settings.data_types
        if data_type.time_filtered
    )


def stretched_interval(interval: float, requests: int, per_hour: int) -> float:
    """The interval (seconds) at which unchanged cycles of `requests` stay within the hourly
    budget: `interval`, or longer when that would need more than `per_hour` an hour."""
    return max(interval, 3600.0 * requests / per_hour)


def _records_by_type(manifest: Manifest) -> Counter[str]:
    held: Counter[str] = Counter()
    for entry in manifest.streams:
        held[entry.data_type] += entry.records
    return held


class Watcher:
    """Watches one experiment into `settings.out`; `say` receives each line to print."""

    def __init__(
        self,
        api: ApiClient,
        settings: Settings,
        experiment_id: str,
        *,
        interval: float,
        say: Callable[[str], None],
        monitor: Callable[[], Monitor],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.settings = settings
        self.experiment_id = experiment_id
        self.asked_interval = interval
        self.say = say
        self.monitor = monitor
        self.clock = clock
        self.sleep = sleep
        self.wall = wall
        self.folder = experiment_folder(settings.out, experiment_id)
        prepare_folder(self.folder)
        selection = Selection.from_settings(settings, wall())
        self.requests = cycle_requests(settings, selection, experiment_id)
        self.interval = stretched_interval(interval, self.requests, settings.rate_limit_per_hour)

    def announce(self) -> str:
        """The line said at the start: what a cycle costs, and a stretched interval."""
        line = (
            f"watching {self.experiment_id} into {self.folder} every {self.interval:g}s "
            f"(an unchanged cycle costs {self.requests} requests)"
        )
        if self.interval > self.asked_interval:
            hourly = 3600 * self.requests / self.asked_interval
            line += (
                f"; every {self.asked_interval:g}s would need {hourly:,.0f} requests an hour, "
                f"more than the key's {self.settings.rate_limit_per_hour:,}: stretched to "
                f"{self.interval:g}s"
            )
        return line

    async def run(self, cycles: int | None = None) -> None:
        """Archive, then run `cycles` cycles (None: until cancelled), one per interval."""
        self.say(self.announce())
        await self._archive(update=False, now=self.wall())
        due = self.clock()
        done = 0
        while cycles is None or done < cycles:
            due += self.interval
            await self.sleep(max(0.0, due - self.clock()))
            done += 1
            try:
                report = await _finish_before_cancel(self.cycle())
            except HyperStudyBulkError as error:
                if ends_run(error) or isinstance(error, ConfigError):
                    raise
                self.say(f"{self.wall():%H:%M:%S}  cycle failed ({error}); the next one retries")
                continue
            line = cycle_line(report, verbose=self.settings.verbose)
            if line is not None:
                self.say(line)

    async def cycle(self) -> Cycle:
        """One cycle (see the module's docstring); the archive is complete after it unless a
        stream failed (then the next cycle finishes it)."""
        before_requests = self.api.stats.requests
        manifest = load_manifest(self.folder)
        before = _records_by_type(manifest)
        now = self.wall()
        if not manifest.complete:
            manifest = await self._archive(update=False, now=now)
        else:
            arrived = await self._add_late_and_find_new(manifest, now)
            if arrived:
                listings = [dt for dt in (PARTICIPANTS, ROOMS) if dt.folder in manifest.data_types]
                manifest = await self._archive(update=True, now=now, types=arrived + listings)
        after = _records_by_type(manifest)
        added = {name: after[name] - before[name] for name in after if after[name] > before[name]}
        return Cycle(
            moment=now,
            added=added,
            total=sum(after.values()),
            requests=self.api.stats.requests - before_requests,
        )

    async def _add_late_and_find_new(self, manifest: Manifest, now: datetime) -> list[DataType]:
        """Steps 1 and 2: late records are added to the archive; returns the types with
        records after the snapshot."""
        selection = Selection.from_manifest(manifest.selection)
        arrived: list[DataType] = []
        for data_type, entries, archived in time_ordered_holdings(manifest):
            probes = selection.probe_specs(self.experiment_id, data_type)
            end = iso_utc(now)
            held = [await total_of(self.api, s, selection.probe_params(s, end)) for s in probes]
            held_now = sum(held)
            if held_now == archived:
                continue
            snapshot = {
                spec.key: await total_of(
                    self.api, spec, selection.probe_params(spec, manifest.snapshot_end_time)
                )
                for spec in probes
            }
            if sum(snapshot.values()) > archived:
                await self._add_late(manifest, entries, snapshot)
            if held_now > sum(snapshot.values()):
                arrived.append(data_type)
        return arrived

    async def _add_late(
        self, manifest: Manifest, entries: list[StreamEntry], totals: dict[str, int]
    ) -> None:
        """Each stream whose total before the snapshot moved gets its late records (a stream
        the probes did not count, at a finer granularity, costs one request more)."""
        streams: dict[str, list[StreamEntry]] = {}
        for entry in entries:
            streams.setdefault(entry.key, []).append(entry)
        for key, windows in streams.items():
            total = totals.get(key)
            if total is None:
                spec = spec_of(windows[0])
                last = max(windows, key=lambda entry: entry.window)
                params = spec.params(
                    start_time=min(windows, key=lambda e: e.window).params.get("startTime"),
                    end_time=last.params["endTime"],
                )
                total = await total_of(self.api, spec, params)
            if total > sum(entry.server_total or 0 for entry in windows):
                await add_late_records(
                    self.api, self.settings, self.folder, manifest, windows, total
                )

    async def _archive(
        self, *, update: bool, now: datetime, types: list[DataType] | None = None
    ) -> Manifest:
        settings = self.settings
        if types is not None:
            settings = dataclasses.replace(settings, data_types=tuple(types))
        if not update and (self.folder / MANIFEST_NAME).exists():
            existing = load_manifest(self.folder)
            if existing.complete:
                asked = Selection.from_settings(settings, now)
                Selection.from_manifest(existing.selection).check_same(
                    asked, self.folder, update=False
                )
                return existing
        return await archive_experiment(
            self.api,
            settings,
            self.experiment_id,
            monitor=self.monitor(),
            update=update,
            now=now,
            folder=self.folder,
        )


async def _finish_before_cancel(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end even when the caller is cancelled meanwhile (then re-raise the
    cancellation once it has finished): a cycle always leaves a consistent archive."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


__all__ = ["Cycle", "Watcher", "cycle_line", "stretched_interval"]
