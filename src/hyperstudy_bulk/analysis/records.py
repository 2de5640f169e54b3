"""An archived data type as a stream of decoded records, in the order `load()` promises.

Experiment-scope streams are concatenated window by window: the API's order. Finer streams
(one per room or participant) are each in time order, so a k-way merge on their time field
gives the records in time order while holding one batch per stream. `rooms` and
`participants` keep only those records; a stream of another room is not even opened.
Pure Python on top of archive.py (no pandas), so export and report share it; so are the SDK's
flattening and its time columns, which export applies without pandas where it can.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from hyperstudy_bulk.archive import Archive, read_lines
from hyperstudy_bulk.datatypes import CHAT, PARTICIPANTS, ROOMS, DataType, Scope
from hyperstudy_bulk.manifest import StreamEntry

Record = dict[str, Any]

TIME_FIELDS = ("timestamp", "startTime", "joinedAt", "createdAt")
"""The field a data type's records are ordered by, the first one a record has."""


FLATTENED_FIELDS = ("sparseRatingData", "metadata")
"""Fields the SDK flattens into `<field>_<key>` columns (see frames.py)."""
TIMESTAMP_COLUMNS = ("timestamp", "startTime", "endTime", "createdAt", "updatedAt")
"""Columns the SDK parses as times."""


def flatten_targets(first: Record) -> tuple[str, ...]:
    """The fields whose keys become columns: decided by the first record alone, as the SDK does."""
    return tuple(name for name in FLATTENED_FIELDS if isinstance(first.get(name), dict))


def flatten(records: list[Record], targets: tuple[str, ...]) -> list[Record]:
    if not targets:
        return records
    out = []
    for record in records:
        copy = dict(record)
        for name in targets:
            nested = copy.get(name)
            if isinstance(nested, dict):
                for key, value in nested.items():
                    copy[f"{name}_{key}"] = value
        out.append(copy)
    return out


@dataclass(frozen=True)
class Selection:
    """Which records of a data type to keep: None keeps all."""

    rooms: frozenset[str] | None = None
    participants: frozenset[str] | None = None

    @classmethod
    def of(cls, rooms: Collection[str] | None, participants: Collection[str] | None) -> Selection:
        return cls(
            None if rooms is None else frozenset(rooms),
            None if participants is None else frozenset(participants),
        )


def iter_records(
    archive: Archive,
    data_type: DataType,
    selection: Selection = Selection(),
    *,
    allow_incomplete: bool = False,
) -> Iterator[list[Record]]:
    """The data type's records in batches (about 4 MiB of NDJSON each, or less where the
    merge of finer streams cuts them). Raises IncompleteDataError unless `allow_incomplete`."""
    if not allow_incomplete:
        archive.require_complete(data_type)
    streams = archive.streams(data_type)
    keep = _Filter(archive, data_type, selection)
    wanted = [s for s in streams if keep.may_hold(s)]
    if all(s.scope == Scope.EXPERIMENT for s in wanted):
        for stream in wanted:
            for batch in stream_batches(archive, stream):
                kept = keep.records(batch, stream)
                if kept:
                    yield kept
        return
    yield from _merged(
        [keep.records_of(stream_records(archive, stream), stream) for stream in wanted]
    )


def stream_batches(archive: Archive, stream: StreamEntry) -> Iterator[list[Record]]:
    for listed in archive.files(stream):
        for lines in read_lines(listed.path):
            yield list(map(orjson.loads, lines))


def stream_records(archive: Archive, stream: StreamEntry) -> Iterator[Record]:
    for batch in stream_batches(archive, stream):
        yield from batch


def time_key(record: Record) -> str:
    """ISO 8601 times of one format sort as text; a record without one sorts first."""
    for name in TIME_FIELDS:
        value = record.get(name)
        if isinstance(value, str):
            return value
    return ""


def _merged(streams: list[Iterator[Record]], batch_rows: int = 50_000) -> Iterator[list[Record]]:
    """Merge time-ordered streams; ties keep the streams' (manifest) order."""
    batch: list[Record] = []
    for record in heapq.merge(*streams, key=time_key):
        batch.append(record)
        if len(batch) >= batch_rows:
            yield batch
            batch = []
    if batch:
        yield batch


class Attribution:
    """Which room and participant a record belongs to. A record without a room id (sparse
    ratings carry none) takes its stream's room, else its participant's room from the
    archive's participants listing."""

    def __init__(self, archive: Archive, data_type: DataType) -> None:
        self.archive = archive
        self.room_field = "id" if data_type == ROOMS else "roomId"
        self.participant_field = {PARTICIPANTS: "id", CHAT: "senderId"}.get(
            data_type, "participantId"
        )
        self._rooms_of: dict[str, str] | None = None

    def participant(self, record: Record) -> Any:
        return record.get(self.participant_field)

    def room(self, record: Record, stream: StreamEntry) -> Any:
        room = record.get(self.room_field)
        if room is not None:
            return room
        room = stream_room(stream)
        if room is not None:
            return room
        participant = self.participant(record)
        return self._participant_rooms().get(participant) if isinstance(participant, str) else None

    def _participant_rooms(self) -> dict[str, str]:
        if self._rooms_of is None:
            self._rooms_of = {}
            if PARTICIPANTS.folder in self.archive.manifest.data_types:
                for stream in self.archive.streams(PARTICIPANTS):
                    for row in stream_records(self.archive, stream):
                        if isinstance(row.get("id"), str) and isinstance(row.get("roomId"), str):
                            self._rooms_of.setdefault(row["id"], row["roomId"])
        return self._rooms_of


class _Filter:
    """Keeps the records of the selected rooms and participants."""

    def __init__(self, archive: Archive, data_type: DataType, selection: Selection) -> None:
        self.selection = selection
        self.attribution = Attribution(archive, data_type)

    def may_hold(self, stream: StreamEntry) -> bool:
        room = stream_room(stream)
        rooms = self.selection.rooms
        return rooms is None or room is None or room in rooms

    def records(self, batch: list[Record], stream: StreamEntry) -> list[Record]:
        if self.selection.rooms is None and self.selection.participants is None:
            return batch
        return [record for record in batch if self._keeps(record, stream)]

    def records_of(self, records: Iterable[Record], stream: StreamEntry) -> Iterator[Record]:
        if self.selection.rooms is None and self.selection.participants is None:
            return iter(records)
        return (record for record in records if self._keeps(record, stream))

    def _keeps(self, record: Record, stream: StreamEntry) -> bool:
        participants = self.selection.participants
        if participants is not None and self.attribution.participant(record) not in participants:
            return False
        rooms = self.selection.rooms
        return rooms is None or self.attribution.room(record, stream) in rooms


def stream_room(stream: StreamEntry) -> str | None:
    if stream.room_id is not None:
        return stream.room_id
    return stream.scope_id if stream.scope == Scope.ROOM else None
