"""The data types an experiment archive holds, and what the API calls them.

`path` is the URL segment (`/data/{path}/{scope}/{id}`), `folder` the archive folder name,
`id_field` the record field that identifies a record (for de-duplication), `scopes` the
scopes the API serves the type at (contract §3.1), and `time_field` the field its time filters
apply to.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Scope(enum.StrEnum):
    EXPERIMENT = "experiment"
    ROOM = "room"
    PARTICIPANT = "participant"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True)
class DataType:
    path: str
    folder: str
    id_field: str | None
    scopes: frozenset[Scope] = ALL_SCOPES
    time_filtered: bool = True
    """Whether a crawl may bound it with endTime: listings of mutable entities are not."""
    time_field: str = "timestamp"
    """The record field startTime/endTime filter on (a recording's is its start)."""

    def __str__(self) -> str:
        return self.folder


EVENTS = DataType("events", "events", "id")
RECORDINGS = DataType("recordings", "recordings", "recordingId", time_field="startTime")
CHAT = DataType("chat", "chat", "messageId")
VIDEOCHAT = DataType("videochat", "videochat", "id")
RATINGS_CONTINUOUS = DataType("ratings/continuous", "ratings-continuous", "ratingId")
RATINGS_SPARSE = DataType("ratings/sparse", "ratings-sparse", "ratingId")
SYNC = DataType("sync", "sync", "metricId")
COMPONENTS = DataType("components", "components", "id")
EYETRACKING = DataType("eyetracking", "eyetracking", "id")
PARTICIPANTS = DataType(
    "participants",
    "participants",
    "id",
    frozenset({Scope.EXPERIMENT, Scope.ROOM}),
    time_filtered=False,
)
ROOMS = DataType("rooms", "rooms", "id", frozenset({Scope.EXPERIMENT}), time_filtered=False)

ALL_DATA_TYPES: tuple[DataType, ...] = (
    EVENTS,
    RECORDINGS,
    CHAT,
    VIDEOCHAT,
    RATINGS_CONTINUOUS,
    RATINGS_SPARSE,
    SYNC,
    COMPONENTS,
    EYETRACKING,
    PARTICIPANTS,
    ROOMS,
)

_BY_NAME = {name: dt for dt in ALL_DATA_TYPES for name in (dt.folder, dt.path)}


def data_type_named(name: str) -> DataType:
    """The data type called `name` (folder or path spelling); KeyError when there is none."""
    return _BY_NAME[name.strip().lower()]


def data_type_names() -> list[str]:
    return [dt.folder for dt in ALL_DATA_TYPES]
