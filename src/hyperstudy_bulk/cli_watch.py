"""`hyperstudy-bulk watch EXPERIMENT_ID [--interval 30s] [--cycles N]`: the command around
watch.Watcher.

Runs until stopped (or for N cycles): Ctrl-C or SIGTERM ends it once the current cycle is
consistent (exit 130 / 143, as `download`); the same command started again continues the
archive. Errors end it with `download`'s exit codes and one line.
"""

from __future__ import annotations

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.cli import failure_code
from hyperstudy_bulk.config import Settings
from hyperstudy_bulk.errors import ConfigError, HyperStudyBulkError
from hyperstudy_bulk.exits import EXIT_OK
from hyperstudy_bulk.timespec import parse_duration
from hyperstudy_bulk.watch import Watcher


async def watch_command(
    settings: Settings, experiment_id: str, interval: str, cycles: int | None
) -> int:
    """Watch until cancelled or `cycles` are done; the exit code."""
    try:
        seconds = parse_duration(interval)
    except ValueError as error:
        raise ConfigError(f"option --interval {error} (got {interval!r})") from None
    if cycles is not None and cycles < 0:
        raise ConfigError(f"option --cycles must be a whole number >= 0 (got {cycles})")
    async with Downloader(settings) as downloader:
        try:
            watcher = Watcher(
                downloader.api,
                settings,
                experiment_id,
                interval=seconds,
                say=lambda line: print(line, flush=True),
                monitor=downloader.monitor,
            )
            await watcher.run(cycles)
        except HyperStudyBulkError as error:
            return failure_code(error, experiment_id)
    return EXIT_OK
