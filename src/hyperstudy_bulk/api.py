"""The library's front door: `Downloader` for async programs, `download()` for scripts.

async with Downloader(settings) as downloader:      # inside any running event loop
    manifest = await downloader.archive("exp-id")

manifests = download(["exp-id"], out="archive", concurrency=8)   # blocking; notebooks too
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from hyperstudy_bulk.budget import Budget
from hyperstudy_bulk.client import ApiClient
from hyperstudy_bulk.concurrency import VegasLimit
from hyperstudy_bulk.config import AUTO, CONCURRENCY_BOUNDS, Settings, load_settings
from hyperstudy_bulk.errors import ConfigError
from hyperstudy_bulk.ledger import SharedBudget
from hyperstudy_bulk.manifest import Manifest
from hyperstudy_bulk.progress import Monitor
from hyperstudy_bulk.retry import RetryPolicy
from hyperstudy_bulk.runner import Assignment, archive_experiment

T = TypeVar("T")


def open_client(
    settings: Settings,
    *,
    log: Callable[[str], None] = lambda m: None,
    budget: Budget | None = None,
) -> ApiClient:
    """An ApiClient configured from settings (enter it with `async with`); its own budget at
    the settings' limits unless one is given."""
    if not settings.api_key:
        raise ConfigError(
            "no API key: set HYPERSTUDY_API_KEY in the environment or in a .env file "
            "(or pass --api-key)"
        )
    return ApiClient(
        base_url=settings.base_url,
        api_key=settings.api_key,
        budget=budget
        or Budget(
            per_hour=settings.rate_limit_per_hour,
            per_minute_per_endpoint=settings.rate_limit_per_minute_per_endpoint,
            time_scale=settings.rate_limit_time_scale,
            log=log,
            max_pause=settings.max_retry_seconds,
        ),
        retry=RetryPolicy.from_settings(settings),
        concurrency=(
            VegasLimit(minimum=CONCURRENCY_BOUNDS[0], maximum=CONCURRENCY_BOUNDS[1])
            if settings.concurrency == AUTO
            else int(settings.concurrency)
        ),
        timeout=settings.timeout,
        connect_timeout=settings.connect_timeout,
        log=log,
    )


class Downloader:
    """One HTTP session and one request budget, shared by every experiment it archives."""

    def __init__(
        self,
        settings: Settings,
        *,
        log: Callable[[str], None] = lambda m: None,
        budget: Budget | None = None,
    ) -> None:
        self.settings = settings
        self.api = open_client(settings, log=log, budget=budget)

    async def __aenter__(self) -> Self:
        await self.api.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.api.__aexit__(exc_type, exc, traceback)
        if isinstance(self.api.budget, SharedBudget):
            self.api.budget.close()

    def monitor(self) -> Monitor:
        """A fresh Monitor wired to this downloader's request counters."""
        return Monitor(
            in_flight_limit=lambda: self.api.concurrency.limit,
            rate_limited=lambda: self.api.budget.counters.rate_limited,
            retries=lambda: sum(self.api.stats.retries.values()),
            budget=self.api.budget,
        )

    async def archive(
        self,
        experiment_id: str,
        *,
        monitor: Monitor | None = None,
        update: bool = False,
        now: datetime | None = None,
        folder: Path | None = None,
        assignment: Assignment | None = None,
    ) -> Manifest:
        """Archive one experiment (or resume, or confirm it unchanged); with `update`, add what
        is new since the archive's last snapshot. `now` fixes the snapshot time (default: the
        clock); `folder` is the archive's folder when not `out/<experiment>` (one renamed or
        copied); an `assignment` fetches only a shard's streams. See
        `runner.archive_experiment` for what is raised."""
        return await archive_experiment(
            self.api,
            self.settings,
            experiment_id,
            monitor=monitor or self.monitor(),
            update=update,
            now=now,
            folder=folder,
            assignment=assignment,
        )


def download(experiment_ids: str | Iterable[str], **options: object) -> list[Manifest]:
    """Archive experiments and block until done; options are the config keys (out=,
    concurrency=, api_key=, ...) over the environment, .env and defaults.

    Works from plain scripts and from notebooks whose event loop is already running.
    """
    ids = [experiment_ids] if isinstance(experiment_ids, str) else list(experiment_ids)
    settings = load_settings(options)

    async def run() -> list[Manifest]:
        async with Downloader(settings) as downloader:
            return [await downloader.archive(experiment_id) for experiment_id in ids]

    return run_blocking(run)


def run_blocking(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, even where this thread already
    runs an event loop (Jupyter): then it runs on a fresh loop in a worker thread.

    Ctrl-C (KeyboardInterrupt) cancels the coroutine, waits for it to finish cancelling (the
    runner saves a consistent manifest on the way out) and is then raised: nothing keeps
    running behind the caller's back, however many times Ctrl-C is pressed.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_awaited(make))
    return _run_in_worker_thread(make)


def _run_in_worker_thread(make: Callable[[], Awaitable[T]]) -> T:
    # The caller's thread only waits, in short slices: a signal is handled by the main
    # thread's interpreter between two slices, whichever thread the kernel delivered it to.
    # It waits on an Event, not Thread.join: a KeyboardInterrupt inside join() can leave the
    # thread marked as stopped while it still runs (CPython 3.11).
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
    started, finished = threading.Event(), threading.Event()
    cancel: list[Callable[[], object]] = []

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        cancel.append(functools.partial(task.get_loop().call_soon_threadsafe, task.cancel))
        started.set()
        return await make()

    def work() -> None:
        try:
            outcome.set_result(asyncio.run(main()))
        except BaseException as error:  # handed to the waiting thread, raised there
            outcome.set_exception(error)
        finally:
            started.set()
            finished.set()

    worker = threading.Thread(target=work, name="hyperstudy-bulk download")
    worker.start()
    try:
        _wait_for(finished)
    except KeyboardInterrupt:
        _stop(finished, started, cancel)
        raise
    finally:
        worker.join()
    return outcome.result()


def _wait_for(finished: threading.Event) -> None:
    while not finished.wait(_WAIT_SLICE):
        pass


def _stop(
    finished: threading.Event, started: threading.Event, cancel: list[Callable[[], object]]
) -> None:
    """Cancel the worker's coroutine once and wait until it has ended; a further Ctrl-C
    meanwhile only waits on (leaving would orphan a thread writing the archive)."""
    cancelled = False
    while not finished.is_set():
        try:
            if not cancelled:
                started.wait()
                if cancel:
                    with contextlib.suppress(RuntimeError):  # its loop has just closed
                        cancel[0]()
                cancelled = True
            _wait_for(finished)
        except KeyboardInterrupt:
            continue


_WAIT_SLICE = 0.05
"""Seconds the calling thread waits at a time: how late Ctrl-C may be noticed."""


async def _awaited(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
