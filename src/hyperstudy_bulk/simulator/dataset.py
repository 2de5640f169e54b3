"""The simulated experiments, computed on demand from the seed.

Layout: an experiment's rooms ran one after another in disjoint time windows. In a room each data
type has a count; its records are dealt round-robin to the room's participants (record i belongs
to participant i % P) with strictly increasing timestamps ts(i) = start + i * span // n.
So every scope is a timestamp-sorted index space:

- room scope: the room's stream;
- participant scope: every P-th record of the room stream, from the participant's slot;
- experiment scope: the rooms' streams concatenated in time order (prefix sums, bisect).

A page is O(log rooms + page size); time filters are bisections on the monotone ts(j); nothing is
materialised except the small participant and room tables when sorted by a non-time field.

Live experiments (mutate): records added while a client crawls are kept per (type, room) as
`Extra`s with stream indices n, n+1, ... after the room's n generated ones, so their ids and
fields come from the same hash and builders, and participant k still owns indices i % P == k. A
scope is then its generated index space merged with its extras sorted by timestamp: each extra's
merged position is (generated records before it) + (extras before it), so locating an index or a
time bound costs one bisection more, and datasets never mutated skip the merge entirely.

Choices where the contract is silent: startTime is inclusive and endTime exclusive; ties cannot
occur (timestamps strictly increase within a scope); sort=onset gives timestamp order, which equals
onset order within a room (at experiment scope rooms stay in time order); `category` and other
type-specific filters are echoed but do not filter; deploymentId filters rooms at experiment scope.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, NamedTuple

from hyperstudy_bulk.simulator import media
from hyperstudy_bulk.simulator.config import SimulatorConfig
from hyperstudy_bulk.simulator.errors import InvalidParameter, NotFound
from hyperstudy_bulk.simulator.ids import (
    HOSTILE_PARTICIPANT_IDS,
    HOSTILE_RECORDING_IDS,
    HOSTILE_ROOM_IDS,
    firestore_id,
    hash_ints,
    hostile,
    unit,
)
from hyperstudy_bulk.simulator.records import (
    BUILDERS,
    COMPLETION_CODES,
    NAMES,
    ROLES,
    Member,
    Record,
    Room,
    iso_ms,
    media_size,
    recording,
    recording_failed,
    recording_format,
)

DATA_TYPES = (
    "events",
    "recordings",
    "chat",
    "videochat",
    "ratings/continuous",
    "ratings/sparse",
    "sync",
    "components",
    "eyetracking",
    "participants",
    "rooms",
)
ALL_SCOPES = ("experiment", "room", "participant")
SCOPES: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {t: ALL_SCOPES for t in DATA_TYPES}
    | {"participants": ("experiment", "room"), "rooms": ("experiment",)}
)
_TIME_SORTS = ("timestamp", "onset")
SORTS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {t: _TIME_SORTS for t in DATA_TYPES}
    | {
        "recordings": ("startTime", "timestamp"),
        "participants": (
            "joinedAt",
            "timestamp",
            "completedAt",
            "id",
            "email",
            "role",
            "status",
            "completionCode",
        ),
        "rooms": ("createdAt", "timestamp", "id", "name", "status"),
    }
)
ROOMS_CAP = 5000
# Mean records per participant relative to config.records, and the chance a room has none.
_SCALE = MappingProxyType(
    {
        "events": 1.0,
        "chat": 0.15,
        "videochat": 0.25,
        "ratings/continuous": 5.0,
        "ratings/sparse": 0.05,
        "sync": 0.5,
        "components": 0.2,
        "eyetracking": 10.0,
    }
)
_EMPTY = MappingProxyType(
    {"chat": 0.3, "videochat": 0.3, "eyetracking": 0.3, "ratings/sparse": 0.2}
)
_CODE = MappingProxyType({t: n + 1 for n, t in enumerate(DATA_TYPES)})
_FIRST_EXPERIMENT_MS = 1_741_000_000_000  # 2025-03-03
_EMBEDDED_URL_EXPIRY = 4_102_444_800  # 2100-01-01: old rows' embedded URLs stay usable
_MINUTE = 60_000


def parse_time(value: str, parameter: str) -> int:
    """ISO 8601 -> unix ms; naive times are UTC. Raises InvalidParameter."""
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidParameter(parameter, value, "ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Experiment:
    index: int
    id: str
    name: str
    created_ms: int
    rooms: tuple[Room, ...]
    deployment_ids: tuple[str, ...]


class Extra(NamedTuple):
    """A record added by Dataset.mutate: index i (>= the room's generated count) in its room
    stream, owned by participant slot k, at timestamp ts (unique within its experiment)."""

    ts: int
    room: Room
    i: int
    k: int


@dataclass(frozen=True)
class _View:
    """One scope's index space: rooms in time order and their generated item counts, merged
    with the scope's extras (sorted by timestamp) at merged positions `at`."""

    rooms: tuple[Room, ...]
    prefix: tuple[int, ...]
    slot: int | None = None
    extras: tuple[Extra, ...] = ()
    at: tuple[int, ...] = ()
    stamps: tuple[int, ...] = ()

    def __len__(self) -> int:
        return self.prefix[-1] + len(self.extras)

    def locate(self, j: int) -> tuple[Room, int, int]:
        """Scope index j -> (room, index in the room stream, participant slot)."""
        if self.at:
            e = bisect_left(self.at, j)
            if e < len(self.at) and self.at[e] == j:
                extra = self.extras[e]
                return extra.room, extra.i, extra.k
            j -= e
        return self.locate_generated(j)

    def locate_generated(self, j: int) -> tuple[Room, int, int]:
        """Index j among the generated items only (extras left out)."""
        r = bisect_right(self.prefix, j) - 1
        room = self.rooms[r]
        local = j - self.prefix[r]
        if self.slot is None:
            return room, local, local % len(room.members)
        return room, self.slot + local * len(room.members), self.slot


class Dataset:
    """Everything the simulator serves, as pure functions of the config.

    `origin` ("http://host:port") is only used in the signed URLs embedded in older recording
    rows, so records equal the served ones when it matches the server's origin.
    """

    def __init__(self, config: SimulatorConfig, *, origin: str = "http://127.0.0.1") -> None:
        self.config = config
        self.origin = origin.rstrip("/")
        self.signer = media.Signer(config.seed)
        self._experiments = tuple(self._make_experiment(e) for e in range(config.experiments))
        self._by_exp = {x.id: x for x in self._experiments}
        self._by_room = {room.id: room for x in self._experiments for room in x.rooms}
        self._members = {
            (room.id, m.id): k
            for room in self._by_room.values()
            for k, m in enumerate(room.members)
        }
        self._participant_rooms: dict[str, list[Room]] = {}
        for room in self._by_room.values():
            for m in room.members:
                self._participant_rooms.setdefault(m.id, []).append(room)
        self._experiment_views: dict[tuple[str, str, str | None], _View] = {}
        self._recordings = {
            (room.id, self.recording_id(room, i)): i
            for room in self._by_room.values()
            for i in range(room.counts["recordings"])
        }
        self._extras: dict[tuple[str, str], list[Extra]] = {}  # (type, room id), in added order
        self._added: Counter[tuple[str, str]] = Counter()  # (type, experiment id)
        self._latest: dict[tuple[str, str], int] = {}  # (type, experiment id) -> max extra ts
        self._merged_views: dict[tuple[str | None, ...], _View] = {}

    # -- layout -------------------------------------------------------------------------------

    def _h(self, *parts: int) -> int:
        return hash_ints(self.config.seed, *parts)

    def _make_experiment(self, e: int) -> Experiment:
        cfg = self.config
        exp_id = firestore_id(self._h(101, e))
        deployments = tuple(firestore_id(self._h(102, e, d)) for d in range(2))
        created = _FIRST_EXPERIMENT_MS + e * 90 * 86_400_000 + self._h(103, e) % (86_400_000)
        cursor = created + 86_400_000
        rooms = []
        for r in range(cfg.rooms):
            g = e * cfg.rooms + r
            counts = self._counts(g, r)
            pre = 2 * _MINUTE + self._h(104, g) % (3 * _MINUTE)
            body = max(30 * _MINUTE + self._h(105, g) % (30 * _MINUTE), max(counts.values()) + 1)
            room_id = (cfg.hostile_ids and hostile(HOSTILE_ROOM_IDS, r, e)) or firestore_id(
                self._h(106, g)
            )
            rooms.append(
                Room(
                    gindex=g,
                    exp_index=e,
                    local_index=r,
                    id=room_id,
                    name=f"Session {r + 1} · {('α', 'β', 'γ', 'δ')[r % 4]}",
                    experiment_id=exp_id,
                    deployment_id=deployments[r * 2 // cfg.rooms],
                    start_ms=cursor,
                    started_ms=cursor + pre,
                    end_ms=cursor + pre + body,
                    members=self._make_members(g, r),
                    counts=counts,
                )
            )
            cursor += pre + body + 5 * _MINUTE + self._h(107, g) % (25 * _MINUTE)
        return Experiment(
            index=e,
            id=exp_id,
            name=("Joint attention", "Movie rating", "Négociation", "合作任务")[e % 4]
            + f" #{e + 1}",
            created_ms=created,
            rooms=tuple(rooms),
            deployment_ids=deployments,
        )

    def _counts(self, g: int, r: int) -> MappingProxyType[str, int]:
        cfg = self.config
        counts = {"participants": cfg.participants, "rooms": 1}
        counts["recordings"] = cfg.participants * (1 + self._h(108, g) % 2)
        for t, scale in _SCALE.items():
            h = self._h(109, _CODE[t], g)
            empty = t in _EMPTY and (r == 1 or (r > 1 and unit(h) < _EMPTY[t]))
            mean = cfg.participants * cfg.records * scale
            counts[t] = 0 if empty else int(mean * (0.5 + unit(hash_ints(h))))
        return MappingProxyType(counts)

    def _make_members(self, g: int, r: int) -> tuple[Member, ...]:
        cfg = self.config
        members = []
        for k in range(cfg.participants):
            h = self._h(110, g, k)
            pid = (cfg.hostile_ids and hostile(HOSTILE_PARTICIPANT_IDS, k, g)) or firestore_id(h)
            done = h % 11 != 0
            members.append(
                Member(
                    id=pid,
                    name=NAMES[(h >> 8) % len(NAMES)],
                    email=f"p{g}.{k}.{firestore_id(h)[:6].lower()}@example.org",
                    role=ROLES[k % len(ROLES)],
                    is_agent=(h >> 16) % 5 == 0,
                    completion_code=COMPLETION_CODES[(h >> 20) % len(COMPLETION_CODES)]
                    if done
                    else None,
                )
            )
        return tuple(members)

    def _window(self, data_type: str, room: Room, n: int) -> tuple[int, int]:
        """(start ms, span ms) over which a room stream's n timestamps are spread."""
        if data_type in ("events", "videochat"):
            return room.start_ms, room.end_ms - room.start_ms
        if data_type == "participants":
            return room.start_ms, room.started_ms - room.start_ms
        if data_type == "rooms":
            return room.start_ms, 1
        if data_type == "recordings":
            return room.started_ms, n * 250
        return room.started_ms, room.end_ms - room.started_ms

    def _ts(self, data_type: str, room: Room, i: int) -> int:
        n = room.counts[data_type]
        if i >= n:
            return self._extras[(data_type, room.id)][i - n].ts
        start, span = self._window(data_type, room, n)
        return start + i * span // n

    # -- lookup -------------------------------------------------------------------------------

    @property
    def experiment_ids(self) -> list[str]:
        return [x.id for x in self._experiments]

    def experiment(self, experiment_id: str) -> Experiment:
        try:
            return self._by_exp[experiment_id]
        except KeyError:
            raise NotFound("Experiment not found") from None

    def room(self, room_id: str) -> Room:
        try:
            return self._by_room[room_id]
        except KeyError:
            raise NotFound("Room not found") from None

    def recording_id(self, room: Room, i: int) -> str:
        pool_id = self.config.hostile_ids and hostile(HOSTILE_RECORDING_IDS, i, room.gindex)
        return pool_id or firestore_id(self._h(_CODE["recordings"], room.gindex, i))

    def _view(
        self,
        data_type: str,
        scope: str,
        scope_id: str,
        room_id: str | None,
        deployment_id: str | None,
    ) -> _View:
        """The scope's generated index space merged with its extras (cached until a mutation)."""
        generated = self._generated_view(data_type, scope, scope_id, room_id, deployment_id)
        if not self._extras:
            return generated
        key = (data_type, scope, scope_id, room_id, deployment_id)
        view = self._merged_views.get(key)
        if view is None:
            extras = sorted(
                (
                    extra
                    for room in generated.rooms
                    for extra in self._extras.get((data_type, room.id), ())
                    if generated.slot is None or extra.k == generated.slot
                ),
                key=lambda extra: extra.ts,
            )
            at = tuple(
                self._generated_before(data_type, generated, extra.ts) + e
                for e, extra in enumerate(extras)
            )
            stamps = tuple(extra.ts for extra in extras)
            view = replace(generated, extras=tuple(extras), at=at, stamps=stamps)
            if len(self._merged_views) < 4096:
                self._merged_views[key] = view
        return view

    def _generated_view(
        self,
        data_type: str,
        scope: str,
        scope_id: str,
        room_id: str | None,
        deployment_id: str | None,
    ) -> _View:
        if data_type not in SCOPES:
            raise NotFound(f"Unknown data type '{data_type}'")
        if scope not in SCOPES[data_type]:
            expected = " or ".join(SCOPES[data_type])
            raise InvalidParameter("scope", scope, f"{expected} for {data_type}")
        if scope == "experiment":
            cached = self._experiment_views.get((data_type, scope_id, deployment_id))
            if cached is not None:
                return cached
            rooms = tuple(
                room
                for room in self.experiment(scope_id).rooms
                if deployment_id is None or room.deployment_id == deployment_id
            )
            if data_type == "rooms":
                rooms = rooms[:ROOMS_CAP]
            prefix = [0]
            for room in rooms:
                prefix.append(prefix[-1] + room.counts[data_type])
            view = _View(rooms, tuple(prefix))
            if len(self._experiment_views) < 4096:
                self._experiment_views[(data_type, scope_id, deployment_id)] = view
            return view
        if scope == "room":
            room = self.room(scope_id)
            return _View((room,), (0, room.counts[data_type]))
        if not room_id:
            raise InvalidParameter("roomId", room_id, "the id of the participant's room")
        room = self.room(room_id)
        slot = self._members.get((room.id, scope_id))
        if slot is None:
            raise NotFound("Participant not found in this room")
        n, p = room.counts[data_type], len(room.members)
        return _View((room,), (0, max(0, (n - slot + p - 1) // p)), slot)

    def rooms(self, experiment_id: str) -> list[Record]:
        """The experiment's rooms, exactly as /data/rooms/experiment/{id} serves them."""
        return self.records("rooms", "experiment", experiment_id)

    def participants(self, scope: str, scope_id: str) -> list[Record]:
        return self.records("participants", scope, scope_id)

    def experiments(self) -> list[Record]:
        """Rows of GET /experiments."""
        return [self.experiment_row(x) for x in self._experiments]

    def experiment_row(self, x: Experiment, *, detail: bool = False) -> Record:
        h = self._h(111, x.index)
        row: Record = {
            "id": x.id,
            "name": x.name,
            "description": "Dyadic study of shared attention while watching short films.",
            "ownerEmail": f"lab{h % 100}@university.example",
            "roomCount": len(x.rooms),
            "participantCount": sum(len(r.members) for r in x.rooms),
            "createdAt": iso_ms(x.created_ms),
            "updatedAt": iso_ms(x.created_ms + h % 86_400_000),
        }
        if detail:
            row |= {
                "ownerId": firestore_id(h),
                "states": [{"id": "welcome"}, {"id": "video-1"}, {"id": "rating"}],
                "roles": list(ROLES[: self.config.participants]),
                "requiredParticipants": self.config.participants,
            }
        return row

    # -- pages --------------------------------------------------------------------------------

    def _generated_before(self, data_type: str, view: _View, t: int) -> int:
        """How many of the view's generated items have timestamps < t (a bisection)."""
        lo, hi = 0, view.prefix[-1]
        while lo < hi:
            mid = (lo + hi) // 2
            room, i, _ = view.locate_generated(mid)
            if self._ts(data_type, room, i) < t:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _bounds(self, data_type: str, view: _View, start: int | None, end: int | None) -> range:
        """Scope indices whose timestamps lie in [start, end)."""

        def first_at_or_after(t: int) -> int:
            return self._generated_before(data_type, view, t) + bisect_left(view.stamps, t)

        lo = 0 if start is None else first_at_or_after(start)
        hi = len(view) if end is None else first_at_or_after(end)
        return range(lo, max(lo, hi))

    def _record(self, data_type: str, room: Room, i: int, k: int) -> Record:
        ts = self._ts(data_type, room, i)
        r = self._h(_CODE[data_type], room.gindex, i)
        if data_type == "recordings":
            return self._recording(room, i, k, ts, r)
        return BUILDERS[data_type](room, k, i, ts, r)

    def _recording(self, room: Room, i: int, k: int, ts: int, r: int) -> Record:
        if ts >= room.end_ms:  # appended after the session: it must still end after it starts
            room = replace(room, end_ms=ts + _MINUTE + r % (30 * _MINUTE))
        rec_id = self.recording_id(room, i)
        url = None
        if room.local_index % 2 == 0:
            fmt = recording_format(room, i, r)
            url = self.origin + self.signer.path(room.id, rec_id, fmt, _EMBEDDED_URL_EXPIRY)
        size = media_size(room, i, self.config.media_bytes, r) + self.config.file_size_skew
        failed = recording_failed(r, self.config.failed_recordings)
        return recording(room, k, i, ts, r, rec_id=rec_id, size=size, signed_url=url, failed=failed)

    def _query(
        self,
        data_type: str,
        scope: str,
        scope_id: str,
        room_id: str | None,
        start_time: str | None,
        end_time: str | None,
        deployment_id: str | None,
    ) -> tuple[_View, range]:
        view = self._view(data_type, scope, scope_id, room_id, deployment_id)
        start = None if start_time is None else parse_time(start_time, "startTime")
        end = None if end_time is None else parse_time(end_time, "endTime")
        return view, self._bounds(data_type, view, start, end)

    def span(
        self,
        data_type: str,
        scope: str,
        scope_id: str,
        room_id: str | None = None,
        start_time: str | None = None,
        end_time: str | None = None,
        *,
        deployment_id: str | None = None,
    ) -> range:
        """The positions the query matches in its scope's sequence: two queries with the same
        span serve the same pages, whatever their time filters' spelling (a page cache key)."""
        return self._query(
            data_type, scope, scope_id, room_id, start_time, end_time, deployment_id
        )[1]

    def total(
        self,
        data_type: str,
        scope: str,
        scope_id: str,
        room_id: str | None = None,
        start_time: str | None = None,
        end_time: str | None = None,
        *,
        deployment_id: str | None = None,
    ) -> int:
        """Number of records the query matches (pagination.total)."""
        return len(
            self.span(
                data_type,
                scope,
                scope_id,
                room_id,
                start_time,
                end_time,
                deployment_id=deployment_id,
            )
        )

    def records(
        self,
        data_type: str,
        scope: str,
        scope_id: str,
        room_id: str | None = None,
        *,
        offset: int = 0,
        limit: int | None = None,
        start_time: str | None = None,
        end_time: str | None = None,
        order: str = "asc",
        sort: str | None = None,
        deployment_id: str | None = None,
    ) -> list[Record]:
        """One page of records, exactly as the data route serves it (limit None = all)."""
        view, span = self._query(
            data_type, scope, scope_id, room_id, start_time, end_time, deployment_id
        )
        allowed = SORTS[data_type]
        if sort is not None and sort not in allowed:
            raise InvalidParameter("sort", sort, "one of " + ", ".join(allowed))
        if order not in ("asc", "desc"):
            raise InvalidParameter("order", order, "asc or desc")
        if sort is not None and sort not in allowed[:2]:
            rows = [self._record(data_type, *view.locate(j)) for j in span]
            rows.sort(key=_sort_key(sort), reverse=order == "desc")
            return rows[offset : None if limit is None else offset + limit]
        indices = span if order == "asc" else span[::-1]
        page = indices[offset : None if limit is None else offset + limit]
        return [self._record(data_type, *view.locate(j)) for j in page]

    def warnings(self, data_type: str, scope: str) -> list[str]:
        """Deterministic MISSING_INDEX warnings, as the real API emits for some queries."""
        if data_type == "videochat" and scope == "experiment":
            return [
                "MISSING_INDEX: videochat requires a composite index on (experimentId, timestamp)."
                " Results may be incomplete."
            ]
        return []

    # -- live experiments ---------------------------------------------------------------------

    def mutate(
        self,
        experiment_id: str,
        data_type: str,
        *,
        append: int = 0,
        insert: int = 0,
        now_ms: int,
        room_id: str | None = None,
    ) -> list[Record]:
        """Add records to an experiment as if it were still running; returns them (inserted
        first, then appended) exactly as they are now served.

        `insert` records arrive late: each lands strictly between two existing records of one
        room (room_id, or one drawn from the seed among rooms with two or more records), so
        every later offset of the experiment, the room and the owning participant shifts by one.
        `append` records are new: each is later than every record of the type in the
        experiment and at least now_ms, so a crawl bounded by endTime = its start never sees
        them while one starting there does. Rooms, slots and insert timestamps are drawn from the
        seed and the number of records added so far, so the same calls (at the same now_ms)
        give the same records.
        Participants and rooms are entities, not streams, and cannot be mutated.
        """
        experiment = self.experiment(experiment_id)
        if data_type not in SCOPES:
            raise NotFound(f"Unknown data type '{data_type}'")
        if data_type in ("participants", "rooms"):
            raise InvalidParameter("dataType", data_type, "a record stream")
        for name, count in (("append", append), ("insert", insert)):
            if not isinstance(count, int) or count < 0:
                raise InvalidParameter(name, count, "integer >= 0")
        room = None if room_id is None else self.room(room_id)
        if room is not None and room.experiment_id != experiment.id:
            raise NotFound("Room not found in this experiment")
        added = [self._insert(experiment, data_type, room) for _ in range(insert)]
        added += [self._append(experiment, data_type, room, now_ms) for _ in range(append)]
        return [self._record(data_type, extra.room, extra.i, extra.k) for extra in added]

    def _draw(self, experiment: Experiment, data_type: str) -> int:
        added = self._added[data_type, experiment.id]
        return self._h(120, _CODE[data_type], experiment.index, added)

    def _append(
        self, experiment: Experiment, data_type: str, room: Room | None, now_ms: int
    ) -> Extra:
        h = self._draw(experiment, data_type)
        ts = max(now_ms, self._latest.get((data_type, experiment.id), now_ms - 1) + 1)
        view = self._generated_view(data_type, "experiment", experiment.id, None, None)
        if len(view):
            last_room, i, _ = view.locate(len(view) - 1)
            ts = max(ts, self._ts(data_type, last_room, i) + 1)
        return self._add(data_type, room or experiment.rooms[h % len(experiment.rooms)], ts)

    def _insert(self, experiment: Experiment, data_type: str, room: Room | None) -> Extra:
        h = self._draw(experiment, data_type)
        if room is None:
            eligible = [r for r in experiment.rooms if r.counts[data_type] >= 2]
            if not eligible:
                raise InvalidParameter("insert", data_type, "a type with 2+ records in a room")
            room = eligible[h % len(eligible)]
        n = room.counts[data_type]
        if n < 2:
            raise InvalidParameter("roomId", room.id, f"a room with 2+ {data_type} records")
        view = self._view(data_type, "room", room.id, None, None)
        # Gaps end at the last generated record: beyond it lie appends, in later rooms' time.
        gaps = n - 1 + bisect_left(view.stamps, self._ts(data_type, room, n - 1))
        for step in range(gaps):
            g = ((h >> 16) + step) % gaps
            before = self._ts(data_type, *view.locate(g)[:2])
            after = self._ts(data_type, *view.locate(g + 1)[:2])
            if after - before >= 2:
                return self._add(data_type, room, before + 1 + (h >> 40) % (after - before - 1))
        raise InvalidParameter("roomId", room.id, "a room with a 2 ms gap between records")

    def _add(self, data_type: str, room: Room, ts: int) -> Extra:
        extras = self._extras.setdefault((data_type, room.id), [])
        i = room.counts[data_type] + len(extras)
        extra = Extra(ts, room, i, i % len(room.members))
        extras.append(extra)
        self._added[data_type, room.experiment_id] += 1
        key = (data_type, room.experiment_id)
        self._latest[key] = max(ts, self._latest.get(key, ts))
        self._merged_views.clear()
        if data_type == "recordings":
            self._recordings[room.id, self.recording_id(room, i)] = i
        return extra

    # -- media --------------------------------------------------------------------------------

    def _media(self, room_id: str, recording_id: str) -> tuple[Room, int, int]:
        room = self.room(room_id)
        i = self._recordings.get((room.id, recording_id))
        if i is None:
            raise NotFound("Recording not found")
        r = self._h(_CODE["recordings"], room.gindex, i)
        if recording_failed(r, self.config.failed_recordings):
            raise NotFound("Recording file not available")
        return room, i, r

    def media_format(self, room_id: str, recording_id: str) -> str:
        room, i, r = self._media(room_id, recording_id)
        return recording_format(room, i, r)

    def media_size(self, room_id: str, recording_id: str) -> int:
        room, i, r = self._media(room_id, recording_id)
        return media_size(room, i, self.config.media_bytes, r)

    def media_pattern(self, room_id: str, recording_id: str) -> bytes:
        """The block the file repeats (see media.chunks)."""
        fmt = self.media_format(room_id, recording_id)
        return media.block(self.config.seed, room_id, recording_id, fmt)

    def media_bytes(self, room_id: str, recording_id: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a recording file (end is clamped to the size)."""
        end = min(end, self.media_size(room_id, recording_id))
        pattern = self.media_pattern(room_id, recording_id)
        return b"".join(media.chunks(pattern, start, end))


def _sort_key(field: str) -> Callable[[Record], tuple[bool, Any]]:
    """Nulls sort last in ascending order, like Firestore."""
    return lambda row: (row.get(field) is None, row.get(field) or "")
