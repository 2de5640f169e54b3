"""`hyperstudy-bulk`: argv -> Settings -> runner; exit codes; one-line messages.

Exit codes: 0 archive complete; 1 finished but incomplete (verify: the archive is not whole);
2 usage, configuration or input error (an unknown experiment, a TLS certificate that cannot be
verified); 3 authentication or permission refused (401/403); 4 the archive could not be written
(disk full, file too large): consistent and resumable; 5 another run is writing the same archive
(nothing touched); 130 / 143 stopped by SIGINT (Ctrl-C) / SIGTERM, consistent and resumable.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from rich.console import Console
from rich.table import Table

from hyperstudy_bulk import cli_analysis
from hyperstudy_bulk._version import __version__
from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.cli_merge import add_merge_parser, merge_command
from hyperstudy_bulk.cli_shards import (
    add_plan_shard_options,
    add_shard_options,
    check_plan_targets,
    check_targets,
    plan_work,
    resolve_shard,
    write_shard_plan,
)
from hyperstudy_bulk.config import (
    OPTIONS,
    Option,
    ProgressMode,
    Settings,
    choices_text,
    load_settings,
)
from hyperstudy_bulk.datatypes import ALL_DATA_TYPES, data_type_names
from hyperstudy_bulk.errors import (
    AuthError,
    BusyError,
    ConfigError,
    HyperStudyBulkError,
    StorageError,
    TlsError,
)
from hyperstudy_bulk.exits import (
    EXIT_AUTH,
    EXIT_BUSY,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STORAGE,
    EXIT_USAGE,
)
from hyperstudy_bulk.exits import say as _say
from hyperstudy_bulk.ledger import shared_budget
from hyperstudy_bulk.manifest import MANIFEST_NAME, Manifest, load_manifest
from hyperstudy_bulk.plan import Shard
from hyperstudy_bulk.progress import (
    Monitor,
    Renderer,
    make_renderer,
    no_file_line,
    summary_table,
)
from hyperstudy_bulk.runner import Assignment, ExperimentNotFound, experiment_folder
from hyperstudy_bulk.survey import Survey, survey_experiment
from hyperstudy_bulk.verify import Report, verify_archive

_FLAGS = {"quiet", "verbose", "allow_insecure_http", "media_only"}
_SWITCHES = {"media"}
"""Options on by default: --NAME and --no-NAME (the environment and config can say either)."""
_PLAN_SKIPS = frozenset(
    {"out", "part_max_mb", "media_only", "media_concurrency", "progress", "quiet", "verbose"}
)
"""What plan has no use for: it writes nothing, shows no progress and logs nothing (its
--out comes with --shards)."""
_ID_MAX = 512
T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_options(parser: argparse.ArgumentParser, *, skip: frozenset[str] = frozenset()) -> None:
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML config file (see config.example.toml)"
    )
    for option in OPTIONS:
        if option.name in skip:
            continue
        if option.name in _FLAGS:
            parser.add_argument(
                option.flag, dest=option.name, action="store_const", const="true", help=option.help
            )
        elif option.name in _SWITCHES:
            parser.add_argument(
                option.flag,
                dest=option.name,
                action=argparse.BooleanOptionalAction,
                help=_with_default(option),
            )
        else:
            parser.add_argument(
                option.flag,
                dest=option.name,
                metavar=option.metavar,
                action="append" if option.repeatable else "store",
                help=_with_default(option),
            )


def _with_default(option: Option) -> str:
    """The option's help and its default as --help shows them (argparse's own default is None,
    so that the environment, .env and config file can fill what a flag does not)."""
    default = option.default
    if option.secret:
        return option.help
    if isinstance(default, bool):
        shown = "on" if default else "off"
    elif default is None:
        shown = "none"
    elif default == ():
        shown = "all"
    elif isinstance(default, tuple):
        shown = "all" if default == ALL_DATA_TYPES else ",".join(map(str, default))
    else:
        shown = str(default)
    return f"{option.help} (default: {shown})".replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hyperstudy-bulk",
        description="Archive whole HyperStudy experiments: every record of every data type.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    download = commands.add_parser(
        "download",
        help="archive experiments into --out",
        description="Archive every record of every data type of each experiment, and its "
        "recordings' media files, into --out/EXPERIMENT_ID; run the same command again to "
        "resume or to confirm an archive complete.",
    )
    download.add_argument(
        "experiment_ids",
        nargs="*",
        metavar="EXPERIMENT_ID",
        help="experiment ids; with --update, archive folders (DIR/EXPERIMENT_ID)",
    )
    download.add_argument(
        "--update",
        action="store_true",
        help="add what is new since each archive's last snapshot, leaving what is there as is",
    )
    _add_options(download)
    add_shard_options(download)
    plan = commands.add_parser(
        "plan",
        help="show what download would fetch, without fetching",
        description="Survey each experiment with a few requests and show, per data type, the "
        "records, streams and requests a download needs, and how long the rate budget makes "
        "it take. Nothing is written (with --shards N: only the plan the shards will share).",
    )
    plan.add_argument(
        "experiment_ids", nargs="*", metavar="EXPERIMENT_ID", help="experiment ids to survey"
    )
    _add_options(plan, skip=_PLAN_SKIPS)
    add_plan_shard_options(plan)
    demo = commands.add_parser("demo", help="archive a demo experiment from the built-in simulator")
    demo.add_argument(
        "--out",
        default="hyperstudy-demo",
        metavar="DIR",
        help="folder for the demo archive (default: hyperstudy-demo)",
    )
    demo.add_argument(
        "--progress",
        default=None,
        metavar=choices_text(ProgressMode),
        help="how progress is shown (default: auto)",
    )
    watch = commands.add_parser(
        "watch",
        help="archive a running experiment and keep adding what arrives",
        description="Archive the experiment into --out, then every interval add what arrived "
        "(new records, and late ones stamped before the last snapshot), one line per cycle. "
        "Ctrl-C or SIGTERM ends it after a consistent cycle; the same command continues.",
    )
    watch.add_argument("experiment_id", metavar="EXPERIMENT_ID", help="the experiment to watch")
    watch.add_argument(
        "--interval",
        default="30s",
        metavar="DURATION",
        help="time between cycles, e.g. 30s, 5m; stretched when the hourly budget needs it "
        "(default: 30s)",
    )
    watch.add_argument(
        "--cycles", type=int, metavar="N", help="stop after N cycles (default: until stopped)"
    )
    _add_options(watch)
    verify = commands.add_parser(
        "verify",
        help="check an archive against its manifest",
        description="Re-hash every file of an archive against its manifest, count its records "
        "and list files the manifest does not know, without any request. Exit code 0 when the "
        "archive is whole, 1 when it is not.",
    )
    verify.add_argument(
        "archive",
        type=Path,
        metavar="DIR/EXPERIMENT_ID",
        help="an archive folder download wrote (renamed or copied is fine)",
    )
    cli_analysis.add_commands(commands)
    add_merge_parser(commands)
    commands.add_parser(
        "simulate", help="run the API simulator (see simulate --help)", add_help=False
    )
    return parser


def entry() -> int:
    """The console script: `main()` tuned for a whole process. Archiving allocates many small,
    short-lived, acyclic objects (a few per record), which set off cyclic collections that find
    nothing; so everything imported so far (it lives as long as the process) is frozen out of
    the collector's view, and the youngest generation is collected every 50,000 allocations
    instead of 700. Together about 8% of a run's time; reference counting still frees memory
    as usual."""
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["simulate"]:
        from hyperstudy_bulk.simulator.cli import main as simulate

        return simulate(args_list[1:])
    try:
        args = build_parser().parse_args(args_list)
    except SystemExit as done:  # --help, --version, or a usage error already reported
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    try:
        if args.command == "demo":
            return asyncio.run(_interruptible(_demo(Path(args.out), args.progress)))
        if args.command == "verify":
            return _verify(args.archive)
        if args.command in cli_analysis.COMMANDS:
            return cli_analysis.run(args)
        if args.command == "merge":
            return merge_command(args.archive)
        settings = load_settings(
            {o.name: getattr(args, o.name, None) for o in OPTIONS}, config_file=args.config
        )
        if args.command == "watch":
            from hyperstudy_bulk.cli_watch import watch_command

            watching = watch_command(
                settings, _check_id(args.experiment_id), args.interval, args.cycles
            )
            return asyncio.run(_interruptible(watching))
        if args.command == "plan":
            ids = [_check_id(i) for i in args.experiment_ids]
            if args.shards is not None:
                return asyncio.run(_plan_shards(settings, ids, args))
            check_plan_targets(ids, args)
            return asyncio.run(_plan(settings, ids))
        check_targets(args.experiment_ids, all_experiments=args.all_experiments, update=args.update)
        shard, source = resolve_shard(args.shard, os.environ)
        if args.update:
            if shard is not None:
                raise ConfigError("--update runs as one process: drop --shard (or the array)")
            return asyncio.run(_interruptible(update_command(settings, args.experiment_ids)))
        ids = [_check_id(experiment_id) for experiment_id in args.experiment_ids]
        job = download_command(
            settings, None if args.all_experiments else ids, shard=shard, shard_source=source
        )
        return asyncio.run(_interruptible(job))
    except KeyboardInterrupt:
        _say("interrupted; run the same command again to finish the archive")
        return EXIT_INTERRUPTED
    except ConfigError as error:
        _say(str(error))
        return EXIT_USAGE


async def _demo(out: Path, progress: str | None) -> int:
    """Start the simulator in this process, archive its experiment, show what was archived."""
    from hyperstudy_bulk.simulator import SimulatorConfig, serve

    demo = SimulatorConfig(seed=2026, rooms=8, participants=3, records=400, latency_ms=20.0)
    async with serve(demo) as sim:
        settings = load_settings(
            {
                "api_key": sim.api_key,
                "base_url": sim.base_url,
                "out": str(out),
                "progress": progress,
            },
            environ={},
            cwd=out.parent if out.parent.exists() else Path.cwd(),
        )
        print(
            f"Simulated HyperStudy API at {sim.base_url}: archiving experiment "
            f"{sim.experiment_ids[0]} into {out}/"
        )
        code = await download_command(settings, sim.experiment_ids[:1])
    report = cli_analysis.write_report(experiment_folder(out, sim.experiment_ids[0]))
    print(f"Report of the archive (open it in a browser): {report}")
    return code


async def _interruptible(work: Coroutine[object, object, int]) -> int:
    """Run `work`; SIGINT or SIGTERM cancel it (the runner saves a consistent manifest on the
    way out) and turn into exit code 128 + the signal's number."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop, signum)
        except (RuntimeError, ValueError):  # not the main thread: the embedding program decides
            continue
        handled.append(signum)
    try:
        return await work
    except asyncio.CancelledError:
        if not received:
            raise
        name = signal.Signals(received[0]).name
        _say(f"stopped by {name}; the archive is consistent: run the same command again to resume")
        return 128 + received[0]
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def _verify(folder: Path) -> int:
    try:
        report = verify_archive(folder)
    except (OSError, ValueError, TypeError, KeyError) as error:
        _say(f"{folder} is not an archive: {folder / MANIFEST_NAME} cannot be read ({error})")
        return EXIT_USAGE
    for problem in report.problems:
        print(problem)
    if report.whole:
        print(
            f"archive is whole: {report.files} files and {report.records:,} records match "
            f"{folder / MANIFEST_NAME}"
        )
        return EXIT_OK
    print(f"archive is NOT whole: {len(report.problems)} problem(s) in {folder}")
    if report.unfinished_streams or report.unfinished_media:
        print(
            f"the download did not finish ({report.unfinished_streams} stream(s), "
            f"{report.unfinished_media} media file(s) missing); to finish it, run: "
            + _finishing_command(report, folder)
        )
    return EXIT_INCOMPLETE


def _finishing_command(report: Report, folder: Path) -> str:
    """The download that finishes what verify found unfinished, asking for no more than the
    archive holds."""
    command = f"hyperstudy-bulk download {report.experiment_id} --out {folder.parent}"
    if set(report.data_types) != set(data_type_names()):
        command += f" --data-types {','.join(report.data_types)}"
    return command + ("" if report.unfinished_streams else " --media-only")


def _check_id(experiment_id: str) -> str:
    if not experiment_id.strip() or len(experiment_id) > _ID_MAX:
        raise ConfigError(f"experiment id {experiment_id!r} is empty or too long")
    if any(ch in experiment_id for ch in "/\\") or not experiment_id.isprintable():
        raise ConfigError(
            f"experiment id {experiment_id!r} contains '/', '\\' or control characters; "
            "copy the id from the HyperStudy dashboard"
        )
    return experiment_id


def _refused(error: AuthError) -> int:
    _say(f"{error}: the API key was refused; check HYPERSTUDY_API_KEY (and its expiry)")
    return EXIT_AUTH


async def download_command(
    settings: Settings,
    experiment_ids: Sequence[str] | None,
    *,
    update: bool = False,
    folder: Path | None = None,
    shard: Shard | None = None,
    shard_source: str = "",
) -> int:
    """Archive each experiment in turn (into `folder` if given: one experiment's archive
    folder; None: every experiment the key sees), or shard `shard`'s streams of each; the
    exit code is the worst outcome."""
    log = _say if settings.verbose else (lambda message: None)
    note = (lambda message: None) if settings.quiet else _say
    worst = EXIT_OK
    out = Console(quiet=settings.quiet)
    budget = shared_budget(settings, log=note, shards=shard.count if shard else 1)
    async with Downloader(settings, log=log, budget=budget) as downloader:
        try:
            work = await plan_work(downloader, experiment_ids, shard, source=shard_source, say=note)
        except ExperimentNotFound as error:
            _say(str(error))
            return EXIT_USAGE
        except AuthError as error:
            return _refused(error)
        for experiment_id, assignment in work:
            monitor = downloader.monitor()
            if not settings.quiet:
                monitor.note = _say
            target = folder or experiment_folder(settings.out, experiment_id)
            code = await _archive_one(
                downloader,
                experiment_id,
                monitor,
                out,
                update=update,
                folder=target,
                assignment=assignment,
            )
            worst = max(worst, code)
            if code in (EXIT_AUTH, EXIT_STORAGE):  # every further experiment would fail alike
                break
    return worst


async def update_command(settings: Settings, folders: Sequence[str]) -> int:
    """`download --update DIR ...`: each folder's manifest names its experiment, whatever the
    folder is called (it may have been renamed or copied)."""
    worst = EXIT_OK
    for folder in map(Path, folders):
        try:
            experiment_id = load_manifest(folder).experiment_id
        except (OSError, ValueError, TypeError, KeyError):
            _say(f"{folder} is not an archive (no readable {MANIFEST_NAME}); download it first")
            worst = max(worst, EXIT_USAGE)
            continue
        code = await download_command(settings, [experiment_id], update=True, folder=folder)
        worst = max(worst, code)
    return worst


def failure_code(error: HyperStudyBulkError, experiment_id: str) -> int:
    """Say in one line why archiving `experiment_id` stopped; its exit code."""
    if isinstance(error, ExperimentNotFound | ConfigError | TlsError):
        _say(str(error))
        return EXIT_USAGE
    if isinstance(error, AuthError):
        return _refused(error)
    if isinstance(error, StorageError):
        _say(str(error))
        return EXIT_STORAGE
    if isinstance(error, BusyError):
        _say(str(error))
        return EXIT_BUSY
    _say(f"{experiment_id}: {error}")
    return EXIT_INCOMPLETE


async def _archive_one(
    downloader: Downloader,
    experiment_id: str,
    monitor: Monitor,
    out: Console,
    *,
    update: bool,
    folder: Path,
    assignment: Assignment | None = None,
) -> int:
    settings = downloader.settings
    renderer = make_renderer(settings.progress, monitor, quiet=settings.quiet)
    try:
        manifest = await _shown(
            renderer,
            downloader.archive(
                experiment_id,
                monitor=monitor,
                update=update,
                folder=folder,
                assignment=assignment,
            ),
        )
    except HyperStudyBulkError as error:
        return failure_code(error, experiment_id)
    out.print(summary_table(manifest, monitor))
    media = settings.media or settings.media_only
    if assignment is not None and manifest.complete:
        print(
            f"shard part complete: {sum(s.records for s in manifest.streams):,} records in "
            f"{folder} ({assignment.manifest_name}); once every shard is done: "
            f"hyperstudy-bulk merge {folder}"
        )
        return _report_media(manifest, folder, media)
    return max(_report(manifest, folder, media=media), _report_media(manifest, folder, media))


async def _shown(renderer: Renderer, work: Coroutine[object, object, T]) -> T:
    """Run `work` under the progress display, which goes before any message that follows.
    Its closing figures are shown unless the run failed before it had any (no stray
    '0/0 records' line or half-drawn bar after a refused key)."""
    await renderer.start()
    try:
        result = await work
    except BaseException:
        await renderer.stop(final=renderer.monitor.has_data)
        raise
    await renderer.stop()
    return result


def _report_media(manifest: Manifest, folder: Path, media: bool) -> int:
    """Which recordings' media files are not on disk, if any."""
    failed = manifest.failed_media
    if not failed:
        return EXIT_OK
    listed = "; ".join(
        f"{m.recording_id} (room {m.room_id}): {m.error or 'not fetched yet'}" for m in failed[:5]
    )
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    again = "run the same command again" if media else "run it again without --no-media"
    _say(
        f"media INCOMPLETE: {len(failed)} recording file(s) not fetched: {listed}{more}. "
        f"Details in {folder / MANIFEST_NAME}; {again} to fetch them."
    )
    return EXIT_INCOMPLETE


def _report(manifest: Manifest, folder: Path, *, media: bool) -> int:
    """The closing line: where the archive is, or which streams are missing and why."""
    no_file = no_file_line(manifest) if media else None
    if manifest.complete:
        records = sum(stream.records for stream in manifest.streams)
        files = [m for m in manifest.media if m.status == "complete"] if media else []
        held = f" and {len(files):,} media files ({sum(m.bytes for m in files) / 1e6:,.1f} MB)"
        print(
            f"archive complete: {records:,} records{held if files else ''} in {folder} "
            f"(see {MANIFEST_NAME})" + (f"; {no_file}" if no_file else "")
        )
        return EXIT_OK
    if no_file:
        print(no_file)
    if not manifest.incomplete_streams:
        return EXIT_OK  # only media files are missing: _report_media names them
    broken = manifest.incomplete_streams
    refused = [s for s in broken if s.error and ("HTTP 403" in s.error or "HTTP 401" in s.error)]
    listed = "; ".join(f"{s.key}: {s.error}" for s in broken[:5])
    more = f" and {len(broken) - 5} more" if len(broken) > 5 else ""
    _say(
        f"archive INCOMPLETE: {len(broken)} stream(s) missing: {listed}{more}. "
        f"Details in {folder / MANIFEST_NAME}; run the same command again to retry them."
    )
    return EXIT_AUTH if refused else EXIT_INCOMPLETE


async def _plan(settings: Settings, experiment_ids: Sequence[str]) -> int:
    async with Downloader(settings) as downloader:
        for experiment_id in experiment_ids:
            try:
                survey = await survey_experiment(downloader.api, settings, experiment_id)
            except (ExperimentNotFound, ConfigError) as error:
                _say(str(error))
                return EXIT_USAGE
            except AuthError as error:
                return _refused(error)
            print(f"{experiment_id}: {survey.selection.describe()}")
            table = Table(
                title=f"Plan for {experiment_id}: {survey.rooms} rooms, "
                f"granularity {survey.granularity}, pages of {survey.page_size:,}"
            )
            for column in ("data type", "records", "streams", "requests (at least)"):
                table.add_column(column, justify="left" if column == "data type" else "right")
            for data_type, requests in survey.requests_by_type.items():
                streams = sum(1 for s in survey.streams if s.data_type is data_type)
                table.add_row(
                    data_type.folder,
                    f"{survey.totals.get(data_type, 0):,}",
                    str(streams),
                    f"{requests:,}",
                )
            if survey.media_files:
                table.add_row(
                    "media files", f"{survey.media_files:,}", "-", f"{survey.media_files:,}"
                )
            Console().print(table)
            print(_plan_line(settings, survey))
    return EXIT_OK


async def _plan_shards(settings: Settings, ids: Sequence[str], args: argparse.Namespace) -> int:
    try:
        await write_shard_plan(settings, ids, args, say=_say)
    except HyperStudyBulkError as error:
        return failure_code(error, "the plan")
    return EXIT_OK


def _plan_line(settings: Settings, survey: Survey) -> str:
    """How many requests, how long the budget makes them take, and what media adds."""
    total = sum(survey.requests_by_type.values()) + survey.media_files
    budget = (
        f"{settings.rate_limit_per_hour}/hour, "
        f"{settings.rate_limit_per_minute_per_endpoint}/minute per endpoint"
    )
    if survey.seconds > 0:
        waits = (
            f"the rate budget ({budget}) makes them take at least "
            f"{_minutes(survey.seconds)} plus network time"
        )
    else:
        waits = f"they fit in the rate budget ({budget}): no waiting, only network time"
    media = (
        f" Media: {survey.media_files:,} recording files, at most one request each to mint "
        "a signed URL (counted above; the transfers are not; --no-media skips them)."
        if survey.media_files
        else ""
    )
    return (
        f"{total:,} requests at least; {waits}.{media} "
        f"Surveying used {survey.survey_requests} requests."
    )


def _minutes(seconds: float) -> str:
    hours, minutes = divmod(math.ceil(seconds / 60), 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
