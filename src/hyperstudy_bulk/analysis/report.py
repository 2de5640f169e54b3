"""`hyperstudy-bulk report`: one self-contained HTML page to judge an archive by.

Four sections, each with a figure (matplotlib, embedded as a base64 PNG `data:` image) and a
table: the manifest's state (complete or not, snapshots, requests, 429s, retries, records per
data type); a timeline per room (records per minute of each data type); a participants x data
types grid of record counts in which an empty cell (no eye-tracking, no ratings) is marked; the
media files and their sizes per room. The page fetches nothing: no script, no stylesheet, no
image from anywhere but itself, so it opens offline.

The counts come from one pass over the records the manifest lists (what is there, also of an
incomplete archive), holding only counters: memory does not grow with the archive.
"""

from __future__ import annotations

import base64
import html
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hyperstudy_bulk.analysis import figures
from hyperstudy_bulk.analysis.records import Attribution, stream_batches, time_key
from hyperstudy_bulk.archive import Archive
from hyperstudy_bulk.datatypes import PARTICIPANTS, ROOMS, data_type_named
from hyperstudy_bulk.manifest import Manifest

PER_PARTICIPANT_EXCLUDED = frozenset({ROOMS.folder, PARTICIPANTS.folder})
TIMELINE_ROOMS = 24
"""Rooms drawn in the timeline figure; the table lists them all."""
GRID_ROWS = 120
"""Participants drawn in the grid figure; the table lists them all."""


def default_report_path(folder: Path) -> Path:
    """Beside the archive, never inside it (verify would list it as a stray)."""
    return folder.parent / f"{folder.name}-report.html"


@dataclass
class Counts:
    """What the report shows of the records: counters only."""

    per_type: Counter[str] = field(default_factory=Counter)
    per_minute: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    """(room, data type) -> minute ('YYYY-MM-DDTHH:MM') -> records."""
    per_participant: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    """(room, participant) -> data type -> records."""


def count_records(archive: Archive) -> Counts:
    counts = Counts()
    for name in archive.manifest.data_types:
        kind = data_type_named(name)
        attribution = Attribution(archive, kind)
        for stream in archive.streams(kind):
            for batch in stream_batches(archive, stream):
                counts.per_type[name] += len(batch)
                for record in batch:
                    room = str(attribution.room(record, stream))
                    if kind.time_filtered:
                        minute = time_key(record)[:16]
                        if minute:
                            counts.per_minute[room, name][minute] += 1
                    if name not in PER_PARTICIPANT_EXCLUDED:
                        participant = str(attribution.participant(record))
                        counts.per_participant[room, participant][name] += 1
    if PARTICIPANTS.folder in archive.manifest.data_types:
        _add_silent_participants(archive, counts)
    return counts


def _add_silent_participants(archive: Archive, counts: Counts) -> None:
    """Participants the listing names but no record mentions still get a (empty) row."""
    attribution = Attribution(archive, PARTICIPANTS)
    for stream in archive.streams(PARTICIPANTS):
        for batch in stream_batches(archive, stream):
            for row in batch:
                key = (str(attribution.room(row, stream)), str(row.get("id")))
                counts.per_participant.setdefault(key, Counter())


def write_report(folder: Path | str, to: Path | str | None = None) -> Path:
    """Write the report of the archive in `folder`; returns its path. Raises ArchiveError (not
    an archive) and OSError (cannot write)."""
    archive = Archive.open(folder)
    target = Path(to) if to is not None else default_report_path(archive.folder)
    counts = count_records(archive)
    manifest = archive.manifest
    sections = [
        _state_section(manifest, counts),
        _timeline_section(manifest, counts),
        _grid_section(manifest, counts),
        _media_section(manifest),
    ]
    page = _PAGE.format(
        title=html.escape(f"Archive of experiment {manifest.experiment_id}"),
        generated=html.escape(datetime.now().astimezone().isoformat(timespec="seconds")),
        body="\n".join(sections),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)
    return target


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(
    header: list[str], rows: list[list[Any]], marked: frozenset[tuple[int, int]] = frozenset()
) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, value in enumerate(row):
            text = f"{value:,}" if isinstance(value, int) else str(value)
            css = ' class="empty"' if (r, c) in marked else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _section(anchor: str, title: str, intro: str, figure: str, table: str) -> str:
    return (
        f'<section id="{anchor}"><h2>{html.escape(title)}</h2><p>{html.escape(intro)}</p>'
        f"<figure>{figure}</figure>{table}</section>"
    )


def _state_section(manifest: Manifest, counts: Counts) -> str:
    streams: dict[str, list[str]] = defaultdict(list)
    for stream in manifest.streams:
        streams[stream.data_type].append(stream.status)
    rows = []
    complete_types = {}
    for name in manifest.data_types:
        statuses = Counter(streams.get(name, []))
        complete_types[name] = set(statuses) <= {"complete"}
        summary = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "no streams"
        rows.append([name, counts.per_type[name], summary])
    requests = manifest.requests
    state = "complete" if manifest.complete else "NOT complete"
    facts = [
        ["archive", state],
        ["snapshots", ", ".join(manifest.snapshots or [manifest.snapshot_end_time])],
        ["granularity", manifest.granularity],
        ["requests (last run)", _number(requests.get("sent"))],
        ["429 responses", _number(requests.get("rate_limited"))],
        ["retries", _number(_retries(requests))],
        ["seconds paused by Retry-After", f"{requests.get('paused_seconds', 0):,.1f}"],
        ["media files", f"{len(manifest.media)} ({len(manifest.failed_media)} not fetched)"],
        ["tool", " ".join(manifest.tool.values())],
    ]
    png = figures.records_per_type(counts.per_type, complete_types)
    figure = _img(png, "records per data type")
    intro = f"The archive is {state}. Records per data type (red: a stream is not complete)."
    table = _table(["", ""], facts) + _table(["data type", "records", "streams"], rows)
    return _section("state", "Manifest", intro, figure, table)


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _retries(requests: dict[str, Any]) -> int | None:
    retries = requests.get("retries")
    if isinstance(retries, dict):
        return sum(v for v in retries.values() if isinstance(v, int))
    return retries if isinstance(retries, int) else None


def _timeline_section(manifest: Manifest, counts: Counts) -> str:
    rooms = sorted({room for room, _ in counts.per_minute})
    series = {
        room: {
            name: counts.per_minute[room, name]
            for name in manifest.data_types
            if (room, name) in counts.per_minute
        }
        for room in rooms
    }
    rows = []
    for room in rooms:
        minutes = sorted(m for c in series[room].values() for m in c)
        total = sum(sum(c.values()) for c in series[room].values())
        rows.append([room, minutes[0] if minutes else "", minutes[-1] if minutes else "", total])
    shown = rooms[:TIMELINE_ROOMS]
    more = f" (the first {len(shown)} of {len(rooms)} rooms)" if len(rooms) > len(shown) else ""
    figure = _img(figures.timelines({r: series[r] for r in shown}), "timeline per room")
    intro = f"Records per minute of each data type, per room{more}."
    table = _table(["room", "first minute (UTC)", "last minute (UTC)", "records"], rows)
    return _section("timeline", "Timeline per room", intro, figure, table)


def _grid_section(manifest: Manifest, counts: Counts) -> str:
    types = [n for n in manifest.data_types if n not in PER_PARTICIPANT_EXCLUDED]
    keys = sorted(counts.per_participant)
    grid = [[counts.per_participant[key][name] for name in types] for key in keys]
    empty = {(r, c + 2) for r, row in enumerate(grid) for c, n in enumerate(row) if n == 0}
    rows = [[room, participant, *row] for (room, participant), row in zip(keys, grid, strict=True)]
    labels = [f"{participant} ({room})" for room, participant in keys]
    shown = min(len(keys), GRID_ROWS)
    figure = _img(figures.grid(labels[:shown], types, grid[:shown]), "participants x data types")
    more = f" The figure shows the first {shown} of {len(keys)}." if len(keys) > shown else ""
    intro = (
        f"Records per participant and data type; a participant with none of a type is marked "
        f"({len(empty)} empty cells).{more}"
    )
    table = _table(["room", "participant", *types], rows, frozenset(empty))
    return _section("participants", "Participants x data types", intro, figure, table)


def _media_section(manifest: Manifest) -> str:
    per_room: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in manifest.media:
        per_room[entry.room_id]["files"] += 1
        per_room[entry.room_id]["bytes"] += entry.bytes
        if entry.status != "complete":
            per_room[entry.room_id]["missing"] += 1
    rooms = sorted(per_room)
    rows: list[list[Any]] = [
        [room, c["files"], f"{c['bytes'] / 1e6:,.1f}", c["missing"]]
        for room, c in sorted(per_room.items())
    ]
    figure = _img(
        figures.media({room: per_room[room]["bytes"] for room in rooms}), "media bytes per room"
    )
    intro = (
        f"{len(manifest.media)} media files, {sum(e.bytes for e in manifest.media) / 1e6:,.1f} MB."
        if manifest.media
        else "No media files in this archive (downloaded with --no-media, or no recordings)."
    )
    table = _table(["room", "files", "MB", "not fetched"], rows)
    return _section("media", "Media per room", intro, figure, table)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }}
section {{ margin-bottom: 3em; }}
figure {{ margin: 1em 0; }}
img {{ max-width: 100%; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
td.empty {{ background: #fdd; font-weight: bold; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>Written by hyperstudy-bulk report at {generated}.</p>
{body}
</body>
</html>
"""
