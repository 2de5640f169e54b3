"""Part of an experiment: chosen rooms, participants of one room, a span of time. Pure.

A selection narrows what an archive holds, and every step consults it here:
- discovery checks the chosen ids against the listings (an unknown one ends the run with one
  line naming it, before any data is fetched);
- planning fetches every data type at the scope of the chosen rooms or participants (never at
  experiment scope, which would hold other rooms), and the listings keep only the chosen rooms
  and participants (`keep`);
- each time-ordered stream's window is cut to [since, until) (`window`);
- the totals check of a complete archive and `watch` ask the totals of the selection
  (`probe_specs`), never of the whole experiment.

The manifest records the selection (`to_manifest`): `--update` and `watch` continue it, and a
different selection asked for the same folder is refused (`check_same`) rather than mixed in.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hyperstudy_bulk.config import Granularity, Settings
from hyperstudy_bulk.datatypes import PARTICIPANTS, ROOMS, DataType
from hyperstudy_bulk.errors import ConfigError
from hyperstudy_bulk.plan import Room, StreamSpec, plan_streams


@dataclass(frozen=True)
class Selection:
    """What an archive holds: `rooms` (empty: all), `participants` of the single room in
    `rooms` (empty: all), and records stamped in [since, until) (ISO moments; None: open).
    `since_asked` / `until_asked` are the bounds as written (`2h` or an ISO time)."""

    rooms: tuple[str, ...] = ()
    participants: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    since_asked: str | None = None
    until_asked: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, now: datetime) -> Selection:
        """The selection the options ask for, relative bounds resolved against `now`.
        Raises ConfigError for participants without exactly one room, or an empty span."""
        if settings.participant and len(settings.room) != 1:
            raise ConfigError(
                "--participant needs exactly one --room ROOM_ID: the room the participants "
                "took part in (participant data is asked with its roomId)"
            )
        since = settings.since.resolve(now) if settings.since else None
        until = settings.until.resolve(now) if settings.until else None
        if since is not None and until is not None and since >= until:
            raise ConfigError(
                f"--since {settings.since} ({since}) is not before --until {settings.until} "
                f"({until}): nothing would be selected"
            )
        return cls(
            rooms=settings.room,
            participants=settings.participant,
            since=since,
            until=until,
            since_asked=settings.since.text if settings.since else None,
            until_asked=settings.until.text if settings.until else None,
        )

    @classmethod
    def from_manifest(cls, recorded: dict[str, Any] | None) -> Selection:
        if not recorded:
            return cls()
        return cls(
            rooms=tuple(recorded.get("rooms", ())),
            participants=tuple(recorded.get("participants", ())),
            since=recorded.get("since"),
            until=recorded.get("until"),
            since_asked=recorded.get("since_asked"),
            until_asked=recorded.get("until_asked"),
        )

    def to_manifest(self) -> dict[str, Any] | None:
        """The manifest's `selection` (None for a whole experiment)."""
        if self.whole:
            return None
        return {
            "rooms": list(self.rooms),
            "participants": list(self.participants),
            "since": self.since,
            "until": self.until,
            "since_asked": self.since_asked,
            "until_asked": self.until_asked,
        }

    @property
    def whole(self) -> bool:
        return self == Selection()

    @property
    def narrows_rooms(self) -> bool:
        return bool(self.rooms)

    def same_request(self, other: Selection) -> bool:
        """Whether `other` asks for the same part (bounds compared as written, so `--since 2h`
        run again continues the archive it started)."""
        return (
            set(self.rooms) == set(other.rooms)
            and set(self.participants) == set(other.participants)
            and self.since_asked == other.since_asked
            and self.until_asked == other.until_asked
        )

    def describe(self) -> str:
        """One line: `rooms A, B; since 2h (2026-...)`, or `the whole experiment`."""
        parts = []
        if self.rooms:
            parts.append(("room " if len(self.rooms) == 1 else "rooms ") + ", ".join(self.rooms))
        if self.participants:
            parts.append(
                ("participant " if len(self.participants) == 1 else "participants ")
                + ", ".join(self.participants)
            )
        for name, asked, moment in (
            ("since", self.since_asked, self.since),
            ("until", self.until_asked, self.until),
        ):
            if moment is not None:
                parts.append(f"{name} {asked}" + (f" ({moment})" if asked != moment else ""))
        return "; ".join(parts) or "the whole experiment"

    def check_same(self, asked: Selection, folder: object, *, update: bool) -> Selection:
        """The selection a run continues: the archive's own when `asked` is the same, or when
        an update asks for nothing. Raises ConfigError saying what to do otherwise."""
        if self.same_request(asked) or (update and asked.whole):
            return self
        how = "--update DIR alone continues it" if update else "ask for the same selection"
        raise ConfigError(
            f"{folder} holds {self.describe()}, not {asked.describe()}: {how}, or download "
            "the other selection into another --out"
        )

    def window(self, start: str | None, end: str) -> tuple[str | None, str]:
        """A snapshot window [start, end) cut to [since, until); an empty cut keeps start ==
        end (the server then counts nothing)."""
        if self.since is not None and (start is None or start < self.since):
            start = self.since
        if self.until is not None and self.until < end:
            end = self.until
        if start is not None and start > end:
            start = end
        return start, end

    def keep(self, spec: StreamSpec) -> frozenset[str] | None:
        """The ids a listing keeps (None: all): the rooms listing only the chosen rooms, a
        room's participant listing only the chosen participants."""
        if spec.data_type is ROOMS and self.rooms:
            return frozenset(self.rooms)
        if spec.data_type is PARTICIPANTS and self.participants:
            return frozenset(self.participants)
        return None

    def granularity(self, requested: Granularity) -> Granularity:
        """The granularity chosen rooms or participants need: their own scope or finer (the
        experiment scope would bring in every other room). Raises ConfigError."""
        if self.participants:
            if requested not in (Granularity.AUTO, Granularity.PARTICIPANT):
                raise ConfigError(
                    f"--participant is fetched at participant scope, not {requested}: "
                    "drop --granularity or use --granularity participant"
                )
            return Granularity.PARTICIPANT
        if requested is Granularity.EXPERIMENT:
            raise ConfigError(
                "--room is fetched at room scope, not experiment: drop --granularity or use "
                "--granularity room (or participant)"
            )
        return Granularity.ROOM if requested is Granularity.AUTO else requested

    def rooms_to_fetch(self) -> list[Room]:
        return [Room(room_id, self.participants) for room_id in self.rooms]

    def unknown_rooms(self, experiment_id: str, listed: Collection[str]) -> None:
        """Raises ConfigError naming every chosen room the experiment's listing lacks."""
        missing = [room for room in self.rooms if room not in listed]
        if missing:
            raise ConfigError(
                f"experiment {experiment_id!r} has no room {', '.join(map(repr, missing))} "
                f"({len(listed)} rooms listed): check the id (`hyperstudy-bulk download "
                f"{experiment_id} --data-types rooms` archives the room list)"
            )

    def unknown_participants(self, listed: Collection[str]) -> None:
        """Raises ConfigError naming every chosen participant the room's listing lacks."""
        missing = [p for p in self.participants if p not in listed]
        if missing:
            raise ConfigError(
                f"room {self.rooms[0]!r} has no participant {', '.join(map(repr, missing))} "
                f"({len(listed)} participants listed): check the id"
            )

    def probe_specs(self, experiment_id: str, data_type: DataType) -> list[StreamSpec]:
        """The fewest streams whose totals add up to the selection's records of a type: the
        experiment, or each chosen room, or each chosen participant."""
        if self.participants:
            granularity = Granularity.PARTICIPANT
        elif self.rooms:
            granularity = Granularity.ROOM
        else:
            granularity = Granularity.EXPERIMENT
        return plan_streams(experiment_id, [data_type], granularity, self.rooms_to_fetch())

    def probe_params(self, spec: StreamSpec, end: str) -> dict[str, str]:
        """Query parameters counting `spec`'s selected records stamped before `end`."""
        start, end = self.window(None, end)
        return spec.params(start_time=start, end_time=end)
