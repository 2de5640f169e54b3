"""`hyperstudy-bulk merge DIR/EXPERIMENT_ID`: the shards' manifest parts joined into one
manifest (exit 0), a missing or unfinished shard named (exit 1), not an archive (exit 2), a
download writing the archive meanwhile (exit 5)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hyperstudy_bulk.errors import BusyError
from hyperstudy_bulk.exits import EXIT_BUSY, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, say
from hyperstudy_bulk.manifest import MANIFEST_NAME
from hyperstudy_bulk.merge import MergeRefused, merge_parts
from hyperstudy_bulk.shards import PLAN_NAME


def add_merge_parser(commands: argparse._SubParsersAction[Any]) -> None:
    merge = commands.add_parser(
        "merge", help="join the shards' manifest parts of an archive into its manifest.json"
    )
    merge.add_argument("archive", type=Path, metavar="DIR/EXPERIMENT_ID")


def merge_command(folder: Path) -> int:
    if not (folder / PLAN_NAME).is_file():
        if (folder / MANIFEST_NAME).is_file():
            print(f"nothing to merge: {folder} was archived by one process ({MANIFEST_NAME})")
            return EXIT_OK
        say(f"{folder} is not an archive (no {PLAN_NAME} or {MANIFEST_NAME}); check the path")
        return EXIT_USAGE
    try:
        manifest = merge_parts(folder, unlocked=say)
    except MergeRefused as refused:
        say(f"merge refused: {refused}")
        return EXIT_INCOMPLETE
    except BusyError as busy:
        say(str(busy))
        return EXIT_BUSY
    except (OSError, ValueError, TypeError, KeyError) as error:
        say(f"{folder}: a shard file cannot be read ({error}); run its shard again")
        return EXIT_USAGE
    records = sum(stream.records for stream in manifest.streams)
    print(
        f"merged into {folder / MANIFEST_NAME}: {len(manifest.streams)} streams, "
        f"{records:,} records, {len(manifest.media)} media files"
    )
    return EXIT_OK
