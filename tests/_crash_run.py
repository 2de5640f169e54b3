"""One download that dies or is cancelled at a chosen durable step (run in a child process by
test_crash_random.py, or by hand with a JSON argument; not a test module).

Every os.replace (a part published, a checkpoint saved, the manifest saved) and every unlink is
a step with two points, just before and just after it. At point `crash_at` the process either
ends at once with os._exit (as kill -9 would: no handler, no flush, nothing saved after it) or
has its download task cancelled (as Ctrl-C or a batch scheduler's SIGTERM would), and runs on.

Argument: one JSON object {base_url, api_key, out, experiment, options, update, now, crash_at,
mode}. Exit status: 0 the archive is complete, 3 it is not, 130 cancelled, 137 killed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.config import load_settings

KILLED, CANCELLED, INCOMPLETE = 137, 130, 3


def main(job: dict[str, Any]) -> None:
    """Run `job` and end the process with its exit status."""
    sys.exit(_download(job))


def _download(job: dict[str, Any]) -> int:
    points = 0
    task: asyncio.Task[Any] | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def point() -> None:
        nonlocal points
        points += 1
        if points != job["crash_at"]:
            return
        if job["mode"] == "kill":
            os._exit(KILLED)
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)

    def stepped(real: Any) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            point()
            result = real(*args, **kwargs)
            point()
            return result

        return step

    os.replace = stepped(os.replace)
    os.unlink = stepped(os.unlink)
    settings = load_settings(
        {
            "api_key": job["api_key"],
            "base_url": job["base_url"],
            "out": job["out"],
            "rate_limit_per_hour": 10**9,
            "rate_limit_per_minute_per_endpoint": 10**9,
            "retry_backoff": 0.01,
            "retry_backoff_max": 0.05,
            "media": False,
            **job["options"],
        },
        environ={},
        cwd=Path(job["out"]).parent,
    )
    now = datetime.fromisoformat(job["now"]) if job["now"] else None

    async def run() -> bool:
        nonlocal task, loop
        loop = asyncio.get_running_loop()
        async with Downloader(settings) as downloader:
            task = asyncio.ensure_future(
                downloader.archive(job["experiment"], update=job["update"], now=now)
            )
            manifest = await task
        return bool(manifest.complete)

    try:
        return 0 if asyncio.run(run()) else INCOMPLETE
    except asyncio.CancelledError:
        return CANCELLED


if __name__ == "__main__":
    main(orjson.loads(sys.argv[1]))
