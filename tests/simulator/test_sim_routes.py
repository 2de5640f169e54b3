"""The data routes over real HTTP: records, envelope, pagination, formats and errors."""

from __future__ import annotations

import csv
import io
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from hyperstudy_bulk.simulator import DATA_TYPES, SimulatorConfig, serve
from hyperstudy_bulk.simulator.dataset import SCOPES
from hyperstudy_bulk.simulator.server import SimulatorHandle

from .conftest import get_json, page_all


def scope_ids(sim: SimulatorHandle, scope: str) -> tuple[str, dict[str, str]]:
    exp = sim.experiment_ids[0]
    room = sim.dataset.rooms(exp)[0]["id"]
    if scope == "experiment":
        return exp, {}
    if scope == "room":
        return room, {}
    return sim.dataset.participants("room", room)[1]["id"], {"roomId": room}


CASES = [(t, s) for t in DATA_TYPES for s in SCOPES[t]]


@pytest.mark.parametrize(("data_type", "scope"), CASES)
async def test_paging_over_http_equals_dataset(
    sim: SimulatorHandle, http: aiohttp.ClientSession, data_type: str, scope: str
) -> None:
    scope_id, params = scope_ids(sim, scope)
    url = f"{sim.base_url}/data/{data_type}/{scope}/{scope_id}"
    rows, metas = await page_all(http, url, 97, **params)
    room_id = params.get("roomId")
    assert rows == sim.dataset.records(data_type, scope, scope_id, room_id)
    meta = metas[0]
    assert meta["dataType"] == data_type
    assert (meta["scope"], meta["scopeId"]) == (scope, scope_id)
    assert ("experimentStartedAt" in meta["processing"]) == (scope != "experiment")
    assert meta["processing"]["version"] == "3.0.0"
    assert all(m["pagination"]["total"] == len(rows) for m in metas)
    if data_type == "ratings/sparse":
        assert meta["ratingType"] == "sparse"


async def test_envelope_and_pagination_block(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    exp = sim.experiment_ids[0]
    url = f"{sim.base_url}/data/events/experiment/{exp}"
    total = sim.dataset.total("events", "experiment", exp)
    status, body = await get_json(http, url, limit=10, offset=20, startTime="2020-01-01T00:00:00Z")
    assert status == 200
    assert set(body) == {"status", "data", "metadata"}
    assert body["status"] == "success"
    meta = body["metadata"]
    assert meta["query"]["limit"] == 10
    assert meta["query"]["offset"] == 20
    assert meta["query"]["startTime"] == "2020-01-01T00:00:00Z"
    assert meta["query"]["endTime"] is None
    assert meta["query"]["category"] is None
    assert meta["pagination"] == {
        "total": total,
        "returned": 10,
        "hasMore": True,
        "limit": 10,
        "offset": 20,
        "nextOffset": 30,
    }
    assert meta["timestamp"].endswith("Z")


async def test_last_page_has_no_next_offset_and_past_end_is_empty(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    room = sim.dataset.rooms(sim.experiment_ids[0])[0]["id"]
    url = f"{sim.base_url}/data/participants/room/{room}"
    # 3 participants, page size 3: total is an exact multiple of the page size.
    _, first = await get_json(http, url, limit=3)
    assert first["metadata"]["pagination"]["hasMore"] is False
    assert "nextOffset" not in first["metadata"]["pagination"]
    _, past = await get_json(http, url, limit=3, offset=3)
    assert past["data"] == []
    assert past["metadata"]["pagination"]["returned"] == 0
    assert past["metadata"]["pagination"]["hasMore"] is False


async def test_limit_is_capped_at_max_page_size() -> None:
    async with (
        serve(SimulatorConfig(records=40, max_page_size=50)) as sim,
        aiohttp.ClientSession(headers={"X-API-Key": sim.api_key}) as http,
    ):
        url = f"{sim.base_url}/data/events/experiment/{sim.experiment_ids[0]}"
        _, body = await get_json(http, url, limit=5000)
        assert len(body["data"]) == 50
        assert body["metadata"]["pagination"]["limit"] == 50
        assert body["metadata"]["pagination"]["nextOffset"] == 50


async def test_time_filters_and_desc_over_http(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    exp = sim.experiment_ids[0]
    whole = sim.dataset.records("sync", "experiment", exp)
    start, end = whole[5]["timestamp"], whole[-5]["timestamp"]
    url = f"{sim.base_url}/data/sync/experiment/{exp}"
    rows, _ = await page_all(http, url, 50, startTime=start, endTime=end, order="desc")
    assert rows == whole[5:-5][::-1]


async def test_warnings_on_videochat_at_experiment_scope(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    _, body = await get_json(
        http, f"{sim.base_url}/data/videochat/experiment/{sim.experiment_ids[0]}"
    )
    assert body["metadata"]["_warnings"][0].startswith("MISSING_INDEX:")
    _, body = await get_json(http, f"{sim.base_url}/data/events/experiment/{sim.experiment_ids[0]}")
    assert "_warnings" not in body["metadata"]


async def test_ndjson_and_csv(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    exp = sim.experiment_ids[0]
    url = f"{sim.base_url}/data/chat/experiment/{exp}"
    expected = sim.dataset.records("chat", "experiment", exp, offset=2, limit=7)
    async with http.get(url, params={"format": "ndjson", "limit": 7, "offset": 2}) as response:
        assert response.content_type == "application/x-ndjson"
        lines = (await response.read()).splitlines()
        assert response.headers["X-Total-Count"] == str(
            sim.dataset.total("chat", "experiment", exp)
        )
        assert response.headers["X-Next-Offset"] == "9"
    assert [orjson.loads(line) for line in lines] == expected
    async with http.get(url, params={"format": "csv", "limit": 7, "offset": 2}) as response:
        assert response.content_type == "text/csv"
        table = list(csv.DictReader(io.StringIO(await response.text())))
    assert [row["messageId"] for row in table] == [r["messageId"] for r in expected]
    assert [row["content"] for row in table] == [r["content"] for r in expected]


async def test_participant_scope_requires_its_room(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    rooms = sim.dataset.rooms(sim.experiment_ids[0])
    member = sim.dataset.participants("room", rooms[0]["id"])[0]["id"]
    url = f"{sim.base_url}/data/events/participant/{member}"
    status, body = await get_json(http, url)
    assert status == 400
    assert body["error"]["code"] == "INVALID_PARAMETER"
    assert body["error"]["details"]["parameter"] == "roomId"
    status, body = await get_json(http, url, roomId=rooms[1]["id"])
    assert status == 404
    assert body["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("path", "params", "status", "code", "parameter"),
    [
        ("data/events/experiment/nope", {}, 404, "NOT_FOUND", None),
        ("data/teleport/experiment/{exp}", {}, 404, "NOT_FOUND", None),
        ("data/events/experiment/{exp}", {"limit": "0"}, 400, "INVALID_PARAMETER", "limit"),
        ("data/events/experiment/{exp}", {"offset": "-1"}, 400, "INVALID_PARAMETER", "offset"),
        ("data/events/experiment/{exp}", {"order": "up"}, 400, "INVALID_PARAMETER", "order"),
        ("data/events/experiment/{exp}", {"sort": "mood"}, 400, "INVALID_PARAMETER", "sort"),
        ("data/events/experiment/{exp}", {"endTime": "soon"}, 400, "INVALID_PARAMETER", "endTime"),
        ("data/events/experiment/{exp}", {"format": "xml"}, 400, "INVALID_PARAMETER", "format"),
        ("data/rooms/room/{room}", {}, 400, "INVALID_PARAMETER", "scope"),
        ("experiments/nope", {}, 404, "NOT_FOUND", None),
    ],
)
async def test_error_statuses_and_bodies(
    sim: SimulatorHandle,
    http: aiohttp.ClientSession,
    path: str,
    params: dict[str, str],
    status: int,
    code: str,
    parameter: str | None,
) -> None:
    exp = sim.experiment_ids[0]
    room = sim.dataset.rooms(exp)[0]["id"]
    got, body = await get_json(http, f"{sim.base_url}/{path.format(exp=exp, room=room)}", **params)
    assert got == status
    assert body["status"] == "error"
    assert body["error"]["code"] == code
    if parameter:
        assert body["error"]["details"]["parameter"] == parameter
        assert "expected" in body["error"]["details"]


@pytest.mark.parametrize("key", [None, "hst_test_wrong"])
async def test_missing_or_wrong_key_is_401(sim: SimulatorHandle, key: str | None) -> None:
    headers = {"X-API-Key": key} if key else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        status, body = await get_json(
            session, f"{sim.base_url}/data/events/experiment/{sim.experiment_ids[0]}"
        )
    assert status == 401
    assert body == {
        "status": "error",
        "error": {"code": "AUTHENTICATION_ERROR", "message": "Invalid or expired API key"},
    }


async def test_missing_scope_is_403() -> None:
    config = SimulatorConfig(records=5, scopes=frozenset({"read:chat"}))
    async with (
        serve(config) as sim,
        aiohttp.ClientSession(headers={"X-API-Key": sim.api_key}) as http,
    ):
        exp = sim.experiment_ids[0]
        status, body = await get_json(http, f"{sim.base_url}/data/events/experiment/{exp}")
        assert status == 403
        assert body["error"]["code"] == "FORBIDDEN"
        assert body["error"]["details"] == {"required": ["read:events"], "provided": ["read:chat"]}
        status, _ = await get_json(http, f"{sim.base_url}/data/chat/experiment/{exp}")
        assert status == 200


async def test_health_needs_no_key_and_experiments_list(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    async with aiohttp.ClientSession() as anonymous:
        status, body = await get_json(anonymous, f"{sim.base_url}/health")
    assert status == 200
    assert body["status"] == "healthy"
    _, listed = await get_json(http, f"{sim.base_url}/experiments", limit=50)
    assert listed["data"] == sim.dataset.experiments()
    assert (listed["metadata"]["dataType"], listed["metadata"]["scope"]) == ("experiments", "user")
    _, one = await get_json(http, f"{sim.base_url}/experiments/{sim.experiment_ids[0]}")
    assert len(one["data"]) == 1
    assert one["data"][0]["id"] == sim.experiment_ids[0]


async def test_hostile_ids_are_served_via_percent_encoding() -> None:
    config = SimulatorConfig(seed=2, rooms=9, participants=7, records=3, hostile_ids=True)
    async with (
        serve(config) as sim,
        aiohttp.ClientSession(headers={"X-API-Key": sim.api_key}) as http,
    ):
        exp = sim.experiment_ids[0]
        rooms = sim.dataset.rooms(exp)
        room_ids = [r["id"] for r in rooms]
        assert {"../../etc/passwd", "room/with/slash", "line\nbreak\x1froom", "R" * 300} <= set(
            room_ids
        )
        assert {"CaseRoom", "caseroom"} <= set(room_ids)
        for room_id in room_ids:
            url = f"{sim.base_url}/data/participants/room/{quote(room_id, safe='')}"
            async with http.get(aiohttp.client.URL(url, encoded=True)) as response:
                body = await response.json()
            assert response.status == 200, room_id
            assert body["data"] == sim.dataset.participants("room", room_id)
            member = body["data"][0]["id"]
            url = f"{sim.base_url}/data/events/participant/{quote(member, safe='')}"
            query = f"?roomId={quote(room_id, safe='')}&limit=5"
            async with http.get(aiohttp.client.URL(url + query, encoded=True)) as response:
                events = await response.json()
            assert events["data"] == sim.dataset.records(
                "events", "participant", member, room_id, limit=5
            )


async def test_stats_count_requests_by_route_and_status(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    exp = sim.experiment_ids[0]
    await get_json(http, f"{sim.base_url}/data/events/experiment/{exp}")
    await get_json(http, f"{sim.base_url}/data/events/experiment/nope")
    async with http.get(f"{sim.origin}/_sim/stats") as response:
        stats = await response.json()
    assert stats["requests"]["GET /data/events/experiment/{id}"] == {"200": 1, "404": 1}
    assert stats == sim.stats()
    async with http.post(f"{sim.origin}/_sim/reset") as response:
        assert response.status == 200
    assert sim.stats()["total"] == 0
