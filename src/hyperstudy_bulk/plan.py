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


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`: the part of a job one of `count` processes fetches."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`K/N` with 1 <= K <= N; raises ValueError saying what is allowed."""
    index, slash, count = text.strip().partition("/")
    if not (slash and index.isdigit() and count.isdigit()):
        raise ValueError(f"--shard {text!r} is not K/N (e.g. --shard 2/4)")
    shard = Shard(int(index), int(count))
    if not 1 <= shard.index <= shard.count:
        raise ValueError(f"--shard {text!r}: K must be between 1 and N (e.g. --shard 1/{count})")
    return shard


def shard_from_slurm(environ: Mapping[str, str]) -> Shard | None:
    """The shard of a SLURM array task, or None outside an array. Task ids need not start at
    0 or 1 and may step (`--array=3-11:2`): shard K is the task's position in the array.
    Raises ValueError when the variables do not describe a contiguous array."""
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT")
    if not all(environ.get(name) for name in names):
        return None
    try:
        task, first, count = (int(environ[name]) for name in names)
        step = int(environ.get("SLURM_ARRAY_TASK_STEP") or 1)
    except ValueError:
        raise ValueError("the SLURM_ARRAY_TASK_* variables are not whole numbers") from None
    offset, misaligned = divmod(task - first, max(1, step))
    if misaligned or not 0 <= offset < count:
        raise ValueError(
            f"SLURM_ARRAY_TASK_ID {task} is not one of {count} evenly spaced tasks from {first}: "
            "submit a range such as --array=1-4, or pass --shard K/N"
        )
    return Shard(offset + 1, count)


def stream_requests(
    spec: StreamSpec,
    *,
    totals: Mapping[DataType, int],
    streams_of_type: Mapping[DataType, int],
    page_size: int,
) -> int:
    """The requests planned for one stream: its data type's total spread evenly over the
    type's streams (per-room totals are unknown before fetching; asking each would cost a
    request per stream), at least one page."""
    total = totals.get(spec.data_type)
    if total is None:
        return 1
    return pages_needed(-(-total // max(1, streams_of_type.get(spec.data_type, 1))), page_size)


def weigh_streams(
    streams: Sequence[StreamSpec], *, totals: Mapping[DataType, int], page_size: int
) -> list[int]:
    """`stream_requests` of every stream, in order."""
    counts = Counter(spec.data_type for spec in streams)
    return [
        stream_requests(spec, totals=totals, streams_of_type=counts, page_size=page_size)
        for spec in streams
    ]


def split_by_weight(keys: Sequence[str], weights: Sequence[int], count: int) -> list[int]:
    """The shard (1-based) of each item: heaviest first onto the least loaded shard (ties to
    the lower shard), so loads differ by at most the lightest item placed last. Deterministic:
    equal weights are taken in key order, whatever order the items came in."""
    loads = [0] * count
    shards = [0] * len(keys)
    for item in sorted(range(len(keys)), key=lambda i: (-weights[i], keys[i])):
        lightest = min(range(count), key=lambda s: (loads[s], s))
        loads[lightest] += weights[item]
        shards[item] = lightest + 1
    return shards


def makespan(weights: Sequence[int], count: int) -> int:
    """The heaviest shard's load when `weights` are split into `count` shards."""
    keys = [f"{i:09d}" for i in range(len(weights))]
    loads = Counter(dict.fromkeys(range(1, count + 1), 0))
    for weight, shard in zip(weights, split_by_weight(keys, weights, count), strict=True):
        loads[shard] += weight
    return max(loads.values())


def finest_useful(candidates: Sequence[Sequence[int]], count: int) -> int:
    """Which of `candidates` (each a granularity's stream weights, coarsest first) to shard:
    the one whose heaviest shard is lightest, ties to the coarser (finer scopes cost more
    requests in all). Coarse streams too few or too uneven for `count` shards lose to finer."""
    spans = [makespan(weights, count) for weights in candidates]
    return spans.index(min(spans))
