"""`hyperstudy-bulk export` and `report`: argv -> the analysis package -> exit code and one line.

The analysis modules (pandas, pyarrow, matplotlib) are imported only when one of these commands
runs, so `download` starts as fast as before.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hyperstudy_bulk.archive import ArchiveError, IncompleteDataError
from hyperstudy_bulk.exits import EXIT_INCOMPLETE, EXIT_OK, EXIT_STORAGE, EXIT_USAGE, say

COMMANDS = frozenset({"export", "report"})


def add_commands(commands: Any) -> None:
    """Add the subcommands to the main parser's `add_subparsers()` object."""
    export = commands.add_parser(
        "export", help="write each data type of an archive as one Parquet or CSV file"
    )
    export.add_argument("archive", type=Path, metavar="DIR/EXPERIMENT_ID")
    export.add_argument(
        "--format", choices=("parquet", "csv"), default="parquet", help="default: parquet"
    )
    export.add_argument(
        "--to",
        type=Path,
        metavar="FOLDER",
        help="where to write (default: DIR/EXPERIMENT_ID-export, beside the archive)",
    )
    export.add_argument(
        "--data-types", metavar="LIST", help="comma-separated data types (default: all archived)"
    )
    export.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="export what an incomplete data type holds instead of refusing",
    )

    report = commands.add_parser(
        "report", help="write a self-contained HTML page to judge an archive by"
    )
    report.add_argument("archive", type=Path, metavar="DIR/EXPERIMENT_ID")
    report.add_argument(
        "--to",
        type=Path,
        metavar="FILE",
        help="where to write (default: DIR/EXPERIMENT_ID-report.html, beside the archive)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "report":
            print(f"report written to {write_report(args.archive, args.to)}")
            return EXIT_OK
        return _export(args)
    except IncompleteDataError as error:
        say(str(error))
        return EXIT_INCOMPLETE
    except ArchiveError as error:
        say(str(error))
        return EXIT_USAGE
    except OSError as error:
        say(f"cannot write {error.filename or 'the output'}: {error.strerror or error}")
        return EXIT_STORAGE


def write_report(archive: Path, to: Path | None = None) -> Path:
    from hyperstudy_bulk.analysis.report import write_report as write

    return write(archive, to)


def _export(args: argparse.Namespace) -> int:
    from hyperstudy_bulk.analysis.export import Exported, export_archive

    def show(done: Exported) -> None:
        print(f"{done.data_type}: {done.rows:,} rows -> {done.path}")

    names = None if args.data_types is None else [n for n in args.data_types.split(",") if n]
    export_archive(
        args.archive,
        fmt=args.format,
        to=args.to,
        data_types=names,
        allow_incomplete=args.allow_incomplete,
        on_done=show,
    )
    return EXIT_OK
