"""Planning: what exists -> which streams to fetch, how many requests, how long. Pure.

A stream is one data type at one scope and id. Planning takes what discovery found (rooms and
their participants) and the chosen granularity, and names each stream's files. It needs no
network, disk or clock, so the same inputs always give the same plan.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from hyperstudy_bulk.config import Granularity
from hyperstudy_bulk.datatypes import DataType, Scope
from hyperstudy_bulk.pagination import pages_needed
from hyperstudy_bulk.sinks import safe_name


@dataclass(frozen=True)
class Room:
    id: str
    participant_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class StreamSpec:
    """One data type at one scope: what to request and where its files go."""

    data_type: DataType
    scope: Scope
    scope_id: str
    stem: str
    """Archive-relative path of the stream's files, without the part number and suffix."""
    room_id: str | None = None
    """The participant scope's required roomId."""

    @property
    def key(self) -> str:
        """Unique within an experiment; the manifest's name for the stream."""
        room = f"@{self.room_id}" if self.room_id is not None else ""
        return f"{self.data_type.folder}/{self.scope}/{self.scope_id}{room}"

    @property
    def endpoint(self) -> str:
        """What the per-endpoint budget counts by: the data type's route, whatever the scope
        (coarser than any server's per-route count, so never over it)."""
        return f"data/{self.data_type.path}"

    @property
    def segments(self) -> tuple[str, ...]:
        return ("data", *self.data_type.path.split("/"), self.scope.value, self.scope_id)

    def params(self, *, start_time: str | None = None, end_time: str | None) -> dict[str, str]:
        """Query parameters for the window [start_time, end_time); listings of mutable
        entities (rooms, participants) are not bounded in time."""
        params: dict[str, str] = {}
        if self.room_id is not None:
            params["roomId"] = self.room_id
        if self.data_type.time_filtered:
            if start_time is not None:
                params["startTime"] = start_time
            if end_time is not None:
                params["endTime"] = end_time
        return params


def _finest_scope(data_type: DataType, granularity: Granularity) -> Scope:
    wanted = {
        Granularity.PARTICIPANT: Scope.PARTICIPANT,
        Granularity.ROOM: Scope.ROOM,
    }.get(granularity, Scope.EXPERIMENT)
    for scope in (Scope.PARTICIPANT, Scope.ROOM, Scope.EXPERIMENT):
        if scope in data_type.scopes and _order(scope) >= _order(wanted):
            return scope
    return Scope.EXPERIMENT


def _order(scope: Scope) -> int:
    return {Scope.PARTICIPANT: 0, Scope.ROOM: 1, Scope.EXPERIMENT: 2}[scope]


def plan_streams(
    experiment_id: str,
    data_types: Iterable[DataType],
    granularity: Granularity,
    rooms: Sequence[Room],
) -> list[StreamSpec]:
    """Every stream of the experiment at `granularity` (a resolved one, not AUTO).

    Data types the API does not serve at that scope (participants, rooms) fall back to the
    nearest coarser scope. Rooms and participants appear once each even when listed twice.
    """
    if granularity is Granularity.AUTO:
        raise ValueError("resolve AUTO with choose_granularity() first")
    streams: list[StreamSpec] = []
    for data_type in data_types:
        scope = _finest_scope(data_type, granularity)
        folder = data_type.folder
        if scope is Scope.EXPERIMENT:
            streams.append(StreamSpec(data_type, scope, experiment_id, f"{folder}/experiment"))
            continue
        for room in _unique_rooms(rooms):
            if scope is Scope.ROOM:
                stem = f"{folder}/room-{safe_name(room.id)}"
                streams.append(StreamSpec(data_type, scope, room.id, stem))
                continue
            for participant in dict.fromkeys(room.participant_ids):
                stem = f"{folder}/room-{safe_name(room.id)}/participant-{safe_name(participant)}"
                streams.append(StreamSpec(data_type, scope, participant, stem, room_id=room.id))
    return _disambiguate_case(streams)


def _unique_rooms(rooms: Sequence[Room]) -> list[Room]:
    merged: dict[str, list[str]] = defaultdict(list)
    for room in rooms:
        merged[room.id].extend(room.participant_ids)
    return [Room(room_id, tuple(ids)) for room_id, ids in merged.items()]


def _disambiguate_case(streams: list[StreamSpec]) -> list[StreamSpec]:
    """On case-insensitive file systems 'Ab' and 'aB' are one file: give such stems a suffix
    from a hash of the stream key, so every stream keeps files of its own."""
    folded = Counter(stream.stem.casefold() for stream in streams)
    return [
        replace(stream, stem=f"{stream.stem}~{hashlib.sha256(stream.key.encode()).hexdigest()[:8]}")
        if folded[stream.stem.casefold()] > 1
        else stream
        for stream in streams
    ]


def estimate_type_requests(
    granularity: Granularity,
    data_type: DataType,
    rooms: Sequence[Room],
    *,
    total: int | None,
    page_size: int,
) -> int:
    """A lower bound on one data type's requests: each stream at least one request, and at
    least ceil(total / page size) in all (an unknown total counts as one page)."""
    scope = _finest_scope(data_type, granularity)
    unique = _unique_rooms(rooms)
    streams = {
        Scope.EXPERIMENT: 1,
        Scope.ROOM: len(unique),
        # Before participants are listed a room counts as one: every room has someone.
        Scope.PARTICIPANT: sum(max(1, len(room.participant_ids)) for room in unique),
    }[scope]
    pages = pages_needed(total, page_size) if total is not None else 1
    # Even with no rooms listed, a data type costs a request: skipping it would leave the
    # archive silent about whether the experiment has such records.
    return max(streams, pages)


def estimate_requests(
    granularity: Granularity,
    data_types: Iterable[DataType],
    rooms: Sequence[Room],
    *,
    totals: Mapping[DataType, int],
    page_size: int,
) -> int:
    """A lower bound on the requests a whole plan at `granularity` needs."""
    return sum(
        estimate_type_requests(
            granularity, data_type, rooms, total=totals.get(data_type), page_size=page_size
        )
        for data_type in data_types
    )


def choose_granularity(
    requested: Granularity,
    data_types: Sequence[DataType],
    rooms: Sequence[Room],
    *,
    totals: Mapping[DataType, int],
    page_size: int,
    rooms_complete: bool = True,
) -> Granularity:
    """`requested`, or for AUTO the granularity needing the fewest requests (ties go to the
    coarser). Finer scopes are only possible when the room listing was complete: the API caps
    it at 5,000 rooms, and a room it did not list would be missing from the archive."""
    if requested is not Granularity.AUTO:
        return requested
    if not rooms_complete:
        return Granularity.EXPERIMENT
    candidates = (Granularity.EXPERIMENT, Granularity.ROOM, Granularity.PARTICIPANT)
    return min(
        candidates,
        key=lambda g: estimate_requests(g, data_types, rooms, totals=totals, page_size=page_size),
    )


@dataclass(frozen=True)
class RequestBudget:
    per_hour: int
    per_minute_per_endpoint: int
    time_scale: float = 1.0


def estimate_seconds(requests_by_endpoint: Mapping[str, int], budget: RequestBudget) -> float:
    """The least time the requests take under the budget's sliding windows: each window admits
    its limit at once, then its limit again per period. Network time is not included."""
    total = sum(requests_by_endpoint.values())
    hour = 3600.0 / budget.time_scale
    minute = 60.0 / budget.time_scale
    waits = [max(0, math.ceil(total / budget.per_hour) - 1) * hour]
    waits += [
        max(0, math.ceil(n / budget.per_minute_per_endpoint) - 1) * minute
        for n in requests_by_endpoint.values()
    ]
    return max(waits)
