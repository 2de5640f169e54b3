"""Planning is pure: streams, file names, granularity and time estimates from plain inputs."""

from __future__ import annotations

import pytest

from hyperstudy_bulk.config import Granularity
from hyperstudy_bulk.datatypes import ALL_DATA_TYPES, EVENTS, EYETRACKING, PARTICIPANTS, ROOMS
from hyperstudy_bulk.plan import (
    RequestBudget,
    Room,
    choose_granularity,
    estimate_requests,
    estimate_seconds,
    plan_streams,
)
from hyperstudy_bulk.sinks import safe_name

ROOMS_AB = [Room("rA", ("p1", "p2")), Room("rB", ("p3",))]


def test_experiment_granularity_is_one_stream_per_type() -> None:
    streams = plan_streams("exp", ALL_DATA_TYPES, Granularity.EXPERIMENT, ROOMS_AB)
    assert [(s.data_type.folder, s.scope.value, s.scope_id) for s in streams] == [
        (dt.folder, "experiment", "exp") for dt in ALL_DATA_TYPES
    ]
    assert streams[0].stem == "events/experiment"
    assert streams[0].segments == ("data", "events", "experiment", "exp")


def test_room_granularity_splits_per_room_and_keeps_listings_coarse() -> None:
    streams = plan_streams("exp", [EVENTS, PARTICIPANTS, ROOMS], Granularity.ROOM, ROOMS_AB)
    assert [s.key for s in streams] == [
        "events/room/rA",
        "events/room/rB",
        "participants/room/rA",
        "participants/room/rB",
        "rooms/experiment/exp",
    ]


def test_participant_granularity_carries_the_room_id() -> None:
    streams = plan_streams("exp", [EYETRACKING], Granularity.PARTICIPANT, ROOMS_AB)
    assert [(s.scope_id, s.room_id) for s in streams] == [("p1", "rA"), ("p2", "rA"), ("p3", "rB")]
    assert streams[0].params(end_time="T") == {"roomId": "rA", "endTime": "T"}
    assert streams[0].stem == "eyetracking/room-rA/participant-p1"


def test_listings_are_not_bounded_by_the_snapshot_time() -> None:
    rooms = plan_streams("exp", [ROOMS], Granularity.EXPERIMENT, [])[0]
    assert rooms.params(end_time="2026-01-01T00:00:00.000Z") == {}


def test_a_room_listed_twice_is_fetched_once() -> None:
    streams = plan_streams("exp", [EVENTS], Granularity.ROOM, [Room("r"), Room("r")])
    assert len(streams) == 1


def test_ids_differing_only_by_case_get_files_of_their_own() -> None:
    streams = plan_streams("exp", [EVENTS], Granularity.ROOM, [Room("Ab"), Room("aB"), Room("c")])
    stems = [s.stem for s in streams]
    assert len({stem.casefold() for stem in stems}) == 3
    assert stems[2] == "events/room-c"


def test_hostile_ids_stay_inside_their_folder() -> None:
    hostile = ["../../etc", "a/b", "x\n\x1fy", "é" * 300, ".hidden", ""]
    streams = plan_streams("exp", [EVENTS], Granularity.ROOM, [Room(h) for h in hostile])
    for stream in streams:
        name = stream.stem.split("/", 1)[1]
        assert "/" not in name
        assert ".." not in name
        assert name.isprintable()
        assert len(name) <= 130
    assert len({s.stem for s in streams}) == len(hostile)


def test_safe_name_is_reversible_for_short_ids() -> None:
    from urllib.parse import unquote

    for identifier in ["plain-ID_1", "a/b", "..", "名前", "tab\there"]:
        assert unquote(safe_name(identifier)) == identifier


def test_auto_picks_the_fewest_requests() -> None:
    choice = choose_granularity(
        Granularity.AUTO, ALL_DATA_TYPES, ROOMS_AB, totals={}, page_size=1000
    )
    assert choice is Granularity.EXPERIMENT
    assert (
        estimate_requests(
            Granularity.EXPERIMENT, ALL_DATA_TYPES, ROOMS_AB, totals={}, page_size=1000
        )
        == 11
    )
    assert (
        estimate_requests(
            Granularity.ROOM, [EVENTS], ROOMS_AB, totals={EVENTS: 5000}, page_size=1000
        )
        == 5
    )


def test_auto_with_no_rooms_still_asks_every_data_type() -> None:
    choice = choose_granularity(Granularity.AUTO, [EVENTS, ROOMS], [], totals={}, page_size=1000)
    assert choice is Granularity.EXPERIMENT
    assert estimate_requests(Granularity.ROOM, [EVENTS], [], totals={}, page_size=1000) == 1


def test_auto_never_trusts_a_capped_room_list() -> None:
    choice = choose_granularity(
        Granularity.AUTO, [EVENTS], [], totals={}, page_size=1000, rooms_complete=False
    )
    assert choice is Granularity.EXPERIMENT


def test_explicit_granularity_is_kept() -> None:
    assert (
        choose_granularity(Granularity.PARTICIPANT, [EVENTS], ROOMS_AB, totals={}, page_size=10)
        is Granularity.PARTICIPANT
    )


@pytest.mark.parametrize(
    ("by_endpoint", "seconds"),
    [
        ({"data/events": 100}, 0.0),  # fits the first window of both limits
        ({"data/events": 250}, 120.0),  # endpoint: 100 now, 100 after 1 min, 50 after 2
        ({"data/a": 90, "data/b": 90, "data/c": 900}, 3600.0),  # 1080 > 1000 per hour
    ],
)
def test_estimate_seconds_under_sliding_windows(
    by_endpoint: dict[str, int], seconds: float
) -> None:
    assert estimate_seconds(by_endpoint, RequestBudget(1000, 100)) == seconds


def test_estimate_seconds_on_a_scaled_clock() -> None:
    assert estimate_seconds({"data/events": 250}, RequestBudget(1000, 100, time_scale=60)) == 2.0
