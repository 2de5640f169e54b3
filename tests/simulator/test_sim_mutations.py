"""Live experiments: records appended or inserted late while a client crawls, as every scope,
time filter, order and page (over HTTP and through Dataset) sees them."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from hyperstudy_bulk.simulator import (
    DATA_TYPES,
    Dataset,
    SimulatorConfig,
    serve_in_subprocess,
    serve_in_thread,
)
from hyperstudy_bulk.simulator.errors import InvalidParameter, NotFound
from hyperstudy_bulk.simulator.records import iso_ms
from hyperstudy_bulk.simulator.server import SimulatorHandle

from .conftest import SMALL, FakeClock, get_json, page_all

NOW_MS = 1_800_000_000_000
STREAMS = [t for t in DATA_TYPES if t not in ("participants", "rooms")]
ID_FIELD = {
    "recordings": "recordingId",
    "chat": "messageId",
    "ratings/continuous": "ratingId",
    "ratings/sparse": "ratingId",
    "sync": "metricId",
}
TIME_FIELD = {"recordings": "startTime"}


def scopes_of(exp: str, event: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(scope, id, roomId) of every scope holding an event: experiment, room, participant."""
    room = event["roomId"]
    return [
        ("experiment", exp, None),
        ("room", room, None),
        ("participant", event["participantId"], room),
    ]


def url_of(sim: SimulatorHandle, data_type: str, scope: str, scope_id: str) -> str:
    return f"{sim.base_url}/data/{data_type}/{scope}/{scope_id}"


async def test_appends_are_invisible_below_the_snapshot_and_visible_from_it(
    sim: SimulatorHandle, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    exp = sim.experiment_ids[0]
    snapshot = iso_ms(int(clock() * 1000))
    url = url_of(sim, "events", "experiment", exp)
    before = sim.dataset.records("events", "experiment", exp)
    added = sim.mutate(exp, "events", append=5)
    assert [r["timestamp"] for r in added] == sorted({r["timestamp"] for r in added})
    assert added[0]["timestamp"] == snapshot
    bounded, metas = await page_all(http, url, 40, endTime=snapshot)
    assert bounded == before
    assert metas[-1]["pagination"]["total"] == len(before)
    later, _ = await page_all(http, url, 2, startTime=snapshot)
    assert later == added
    everything, metas = await page_all(http, url, 100)
    assert everything == before + added
    assert metas[0]["pagination"]["total"] == len(before) + 5
    assert sim.dataset.records("events", "experiment", exp, end_time=snapshot) == before


async def test_successive_appends_strictly_increase_even_if_the_clock_stands_still(
    sim: SimulatorHandle, clock: FakeClock
) -> None:
    exp = sim.experiment_ids[0]
    first = sim.mutate(exp, "sync", append=2)
    second = sim.mutate(exp, "sync", append=2)
    clock.advance(60)
    third = sim.mutate(exp, "sync", append=1)
    stamps = [r["timestamp"] for r in first + second + third]
    assert stamps == sorted(set(stamps))
    assert third[0]["timestamp"] == iso_ms(NOW_MS + 60_000)


@pytest.mark.parametrize("scope_index", [0, 1, 2], ids=["experiment", "room", "participant"])
async def test_an_insert_shifts_every_following_offset_by_one(
    sim: SimulatorHandle, http: aiohttp.ClientSession, scope_index: int
) -> None:
    ds, exp = sim.dataset, sim.experiment_ids[0]
    snapshot = {s: ds.records("events", *s) for s in _all_scopes(ds, exp)}
    (row,) = sim.mutate(exp, "events", insert=1)
    scope, scope_id, room_id = scopes_of(exp, row)[scope_index]
    before = snapshot[(scope, scope_id, room_id)]
    params = {"roomId": room_id} if room_id else {}
    after, metas = await page_all(http, url_of(sim, "events", scope, scope_id), 7, **params)
    assert after == ds.records("events", scope, scope_id, room_id)
    assert metas[0]["pagination"]["total"] == len(before) + 1
    p = after.index(row)
    assert 0 < p < len(before)
    assert after[:p] == before[:p]
    assert after[p + 1 :] == before[p:]
    _, page = await get_json(
        http, url_of(sim, "events", scope, scope_id), offset=p + 1, limit=1, **params
    )
    assert page["data"] == [before[p]]


def _all_scopes(ds: Dataset, exp: str) -> list[tuple[str, str, str | None]]:
    scopes: list[tuple[str, str, str | None]] = [("experiment", exp, None)]
    for room in ds.rooms(exp):
        scopes.append(("room", room["id"], None))
        scopes += [
            ("participant", p["id"], room["id"]) for p in ds.participants("room", room["id"])
        ]
    return scopes


@pytest.mark.parametrize("data_type", STREAMS)
def test_added_records_are_valid_and_every_scope_stays_consistent(data_type: str) -> None:
    ds = Dataset(SMALL)
    exp = ds.experiment_ids[0]
    generated = ds.records(data_type, "experiment", exp)
    added = ds.mutate(exp, data_type, insert=4, append=3, now_ms=NOW_MS)
    assert len(added) == 7
    whole = ds.records(data_type, "experiment", exp)
    assert ds.total(data_type, "experiment", exp) == len(whole) == len(generated) + 7
    id_field, time_field = ID_FIELD.get(data_type, "id"), TIME_FIELD.get(data_type, "timestamp")
    assert len({r[id_field] for r in whole}) == len(whole)
    stamps = [r[time_field] for r in whole]
    assert stamps == sorted(set(stamps))
    assert whole[-3:] == added[-3:]
    assert all(
        generated[0][time_field] < r[time_field] < generated[-1][time_field] for r in added[:4]
    )
    fields = {key for r in generated for key in r}
    assert all(set(r) <= fields and len(r[id_field]) == 20 for r in added)
    in_rooms: list[dict[str, Any]] = []
    for room in ds.rooms(exp):
        mine = ds.records(data_type, "room", room["id"])
        in_rooms += mine
        members = [p["id"] for p in ds.participants("room", room["id"])]
        owner = "senderId" if data_type == "chat" else "participantId"
        for member in members:
            theirs = ds.records(data_type, "participant", member, room["id"])
            assert theirs == [r for r in mine if r[owner] == member]
            assert ds.total(data_type, "participant", member, room["id"]) == len(theirs)
        assert {r[owner] for r in mine} <= set(members)
    assert sorted(in_rooms, key=lambda r: r[time_field]) == whole


def test_time_filters_totals_and_desc_pages_see_the_mutations() -> None:
    ds = Dataset(SMALL)
    exp = ds.experiment_ids[0]
    ds.mutate(exp, "components", insert=6, append=4, now_ms=NOW_MS)
    whole = ds.records("components", "experiment", exp)
    for a, b in [
        (0, len(whole) - 1),
        (3, 40),
        (10, len(whole) - 2),
        (len(whole) - 4, len(whole) - 1),
    ]:
        start, end = whole[a]["timestamp"], whole[b]["timestamp"]
        window = ds.records("components", "experiment", exp, start_time=start, end_time=end)
        assert window == whole[a:b]
        assert ds.total("components", "experiment", exp, None, start, end) == b - a
    backwards = ds.records("components", "experiment", exp, order="desc")
    assert backwards == whole[::-1]
    for offset in range(0, len(whole) + 3, 7):
        page = ds.records("components", "experiment", exp, order="desc", offset=offset, limit=7)
        assert page == backwards[offset : offset + 7]


async def test_desc_over_http_after_mutations(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    exp = sim.experiment_ids[0]
    sim.mutate(exp, "videochat", insert=3, append=2)
    url = url_of(sim, "videochat", "experiment", exp)
    rows, metas = await page_all(http, url, 9, order="desc")
    assert rows == sim.dataset.records("videochat", "experiment", exp)[::-1]
    assert metas[0]["pagination"]["total"] == len(rows)


async def test_cached_pages_are_not_served_stale(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    exp = sim.experiment_ids[0]
    url = url_of(sim, "events", "experiment", exp)
    _, old = await get_json(http, url, offset=0, limit=1000)
    room = sim.dataset.rooms(exp)[0]["id"]
    (row,) = sim.mutate(exp, "events", insert=1, room_id=room)
    _, new = await get_json(http, url, offset=0, limit=1000)
    assert new["data"] != old["data"]
    assert row in new["data"]
    assert new["data"] == sim.dataset.records("events", "experiment", exp, limit=1000)
    assert new["metadata"]["pagination"]["total"] == old["metadata"]["pagination"]["total"] + 1


async def test_admin_route_mutates_and_reset_keeps_mutations(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    exp = sim.experiment_ids[0]
    body = {"experimentId": exp, "dataType": "chat", "append": 2, "insert": 1}
    async with http.post(sim.origin + "/_sim/mutate", json=body) as response:
        assert response.status == 200
        added = (await response.json())["added"]
    assert len(added) == 3
    await http.post(sim.origin + "/_sim/reset")
    whole = sim.dataset.records("chat", "experiment", exp)
    assert all(r in whole for r in added)
    rows, _ = await page_all(http, url_of(sim, "chat", "experiment", exp), 5)
    assert rows == whole


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"experimentId": "nope", "dataType": "events", "append": 1}, 404, "NOT_FOUND"),
        ({"dataType": "participants", "append": 1}, 400, "INVALID_PARAMETER"),
        ({"dataType": "events", "append": -1}, 400, "INVALID_PARAMETER"),
        ({"dataType": "events", "insert": "2"}, 400, "INVALID_PARAMETER"),
        ({"dataType": "events", "append": 1, "roomId": "nope"}, 404, "NOT_FOUND"),
        ({"append": 1}, 400, None),
    ],
)
async def test_admin_route_rejects_bad_mutations(
    sim: SimulatorHandle,
    http: aiohttp.ClientSession,
    body: dict[str, Any],
    status: int,
    code: str | None,
) -> None:
    body = {"experimentId": sim.experiment_ids[0]} | body
    async with http.post(sim.origin + "/_sim/mutate", json=body) as response:
        assert response.status == status
        reply = await response.json()
    assert reply["status"] == "error"
    if code is not None:
        assert reply["error"]["code"] == code
    assert sim.dataset.total("events", "experiment", sim.experiment_ids[0]) == len(
        Dataset(SMALL).records("events", "experiment", sim.experiment_ids[0])
    )


def test_insert_needs_a_room_with_two_records() -> None:
    ds = Dataset(SMALL)
    exp = ds.experiment_ids[0]
    empty = next(r["id"] for r in ds.rooms(exp) if ds.total("chat", "room", r["id"]) < 2)
    with pytest.raises(InvalidParameter):
        ds.mutate(exp, "chat", insert=1, room_id=empty, now_ms=NOW_MS)
    (appended,) = ds.mutate(exp, "chat", append=1, room_id=empty, now_ms=NOW_MS)
    assert appended["roomId"] == empty
    other = Dataset(SimulatorConfig(seed=3, experiments=2, rooms=3, records=40))
    with pytest.raises(NotFound):
        other.mutate(
            exp, "chat", append=1, room_id=other.rooms(other.experiment_ids[1])[0]["id"], now_ms=0
        )


def test_the_same_seed_and_calls_give_the_same_rooms_participants_and_records() -> None:
    def run(seed: int) -> list[dict[str, Any]]:
        ds = Dataset(SimulatorConfig(seed=seed, rooms=5, participants=3, records=40))
        exp = ds.experiment_ids[0]
        added = ds.mutate(exp, "events", insert=20, append=10, now_ms=NOW_MS)
        return added + ds.mutate(exp, "eyetracking", insert=5, now_ms=NOW_MS)

    first, again, other = run(3), run(3), run(4)
    assert first == again
    assert len({r["roomId"] for r in first}) > 1
    assert len({r["participantId"] for r in first}) > 1
    assert [r["id"] for r in first] != [r["id"] for r in other]


async def test_an_appended_recording_can_be_downloaded(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    exp = sim.experiment_ids[0]
    (rec,) = sim.mutate(exp, "recordings", append=1)
    assert rec["duration"] > 0
    assert rec["endTime"] > rec["startTime"]
    path = f"/data/recordings/download/{rec['roomId']}/{rec['recordingId']}"
    status, body = await get_json(http, sim.base_url + path)
    assert status == 200
    async with http.get(body["data"]["url"]) as media:
        assert media.status == 200
        size = len(await media.read())
    assert size == sim.dataset.media_size(rec["roomId"], rec["recordingId"])


def test_thread_and_process_handles_mutate() -> None:
    with serve_in_thread(SMALL) as handle:
        exp = handle.experiment_ids[0]
        added = handle.mutate(exp, "sync", append=1, insert=1)
        assert all(r in handle.dataset.records("sync", "experiment", exp) for r in added)
    with serve_in_subprocess(SMALL) as child:
        exp = child.experiment_ids[0]
        (row,) = child.mutate(exp, "sync", insert=1)
        assert [row] == Dataset(SMALL).mutate(exp, "sync", insert=1, now_ms=0)
