"""The official SDK, unmodified, must read from the simulator exactly what Dataset computes."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hyperstudy
import pytest
from hyperstudy.exceptions import AuthenticationError, NotFoundError, ValidationError

from hyperstudy_bulk.simulator import SimulatorConfig, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle

CONFIG = SimulatorConfig(seed=7, rooms=3, participants=2, records=500, failed_recordings=0.2)

Fetch = Callable[..., Any]
SDK_CALLS: dict[str, Fetch] = {
    "events": lambda hs, sid, **kw: hs.get_events(sid, **kw),
    "recordings": lambda hs, sid, **kw: hs.get_recordings(sid, **kw),
    "chat": lambda hs, sid, **kw: hs.get_chat(sid, **kw),
    "videochat": lambda hs, sid, **kw: hs.get_videochat(sid, **kw),
    "ratings/continuous": lambda hs, sid, **kw: hs.get_ratings(sid, kind="continuous", **kw),
    "ratings/sparse": lambda hs, sid, **kw: hs.get_ratings(sid, kind="sparse", **kw),
    "sync": lambda hs, sid, **kw: hs.get_sync(sid, **kw),
    "components": lambda hs, sid, **kw: hs.get_components(sid, **kw),
    "eyetracking": lambda hs, sid, **kw: hs.get_eyetracking(sid, **kw),
    "participants": lambda hs, sid, **kw: hs.get_participants(sid, **kw),
    "rooms": lambda hs, sid, **kw: hs.get_rooms(sid, **kw),
}
CASES = [
    (data_type, scope)
    for data_type in SDK_CALLS
    for scope in ("experiment", "room", "participant")
    if not (data_type == "participants" and scope == "participant")
    and not (data_type == "rooms" and scope != "experiment")
]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    with serve_in_thread(CONFIG) as handle:
        yield handle


@pytest.fixture(scope="module")
def client(sim: SimulatorHandle) -> hyperstudy.HyperStudy:
    return hyperstudy.HyperStudy(api_key=sim.api_key, base_url=sim.base_url)


def _scope_args(sim: SimulatorHandle, scope: str) -> tuple[str, dict[str, str]]:
    """The first room has data of every type; its first participant is used."""
    exp_id = sim.experiment_ids[0]
    room = sim.dataset.rooms(exp_id)[0]
    if scope == "experiment":
        return exp_id, {}
    if scope == "room":
        return room["id"], {}
    member = sim.dataset.participants("room", room["id"])[0]
    return member["id"], {"room_id": room["id"]}


@pytest.mark.parametrize(("data_type", "scope"), CASES)
def test_sdk_reads_exactly_the_dataset(
    sim: SimulatorHandle, client: hyperstudy.HyperStudy, data_type: str, scope: str
) -> None:
    scope_id, extra = _scope_args(sim, scope)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = SDK_CALLS[data_type](
            client, scope_id, scope=scope, output="dict", progress=False, **extra
        )
    expected = sim.dataset.records(data_type, scope, scope_id, extra.get("room_id"))
    assert got == expected
    assert len(got) == sim.dataset.total(data_type, scope, scope_id, extra.get("room_id"))
    if data_type == "videochat" and scope == "experiment":
        assert any("MISSING_INDEX" in str(w.message) for w in caught)


def test_multi_page_streams_are_covered(sim: SimulatorHandle) -> None:
    """The SDK pages by 1000; at least one stream per scope must need several pages."""
    for scope in ("experiment", "room", "participant"):
        scope_id, extra = _scope_args(sim, scope)
        total = sim.dataset.total("ratings/continuous", scope, scope_id, extra.get("room_id"))
        assert total > 1000


def test_sdk_single_page_with_limit_and_offset(
    sim: SimulatorHandle, client: hyperstudy.HyperStudy
) -> None:
    exp_id = sim.experiment_ids[0]
    got = client.get_events(exp_id, limit=25, offset=40, output="dict")
    assert got == sim.dataset.records("events", "experiment", exp_id, offset=40, limit=25)


def test_sdk_time_filter_and_descending_order(
    sim: SimulatorHandle, client: hyperstudy.HyperStudy
) -> None:
    exp_id = sim.experiment_ids[0]
    everything = sim.dataset.records("chat", "experiment", exp_id)
    start, end = everything[3]["timestamp"], everything[-3]["timestamp"]
    got = client.get_chat(
        exp_id, start_time=start, end_time=end, order="desc", output="dict", progress=False
    )
    assert got == list(reversed(everything[3:-3]))


def test_wrong_key_raises_authentication_error(sim: SimulatorHandle) -> None:
    bad = hyperstudy.HyperStudy(api_key="hst_test_wrong", base_url=sim.base_url)
    with pytest.raises(AuthenticationError) as info:
        bad.get_events(sim.experiment_ids[0], output="dict", progress=False)
    assert info.value.status_code == 401
    assert info.value.code == "AUTHENTICATION_ERROR"


def test_unknown_experiment_raises_not_found(client: hyperstudy.HyperStudy) -> None:
    with pytest.raises(NotFoundError):
        client.get_events("no-such-experiment", output="dict", progress=False)


def test_bad_start_time_raises_validation_error(
    sim: SimulatorHandle, client: hyperstudy.HyperStudy
) -> None:
    with pytest.raises(ValidationError) as info:
        client.get_events(sim.experiment_ids[0], start_time="yesterday", output="dict")
    assert info.value.details["parameter"] == "startTime"


def test_health_and_experiments(sim: SimulatorHandle, client: hyperstudy.HyperStudy) -> None:
    assert client.health()["status"] == "healthy"
    assert client.list_experiments(output="dict", progress=False) == sim.dataset.experiments()
    assert client.get_experiment(sim.experiment_ids[0])["id"] == sim.experiment_ids[0]


def test_sdk_downloads_every_recording_byte_exact(
    sim: SimulatorHandle, client: hyperstudy.HyperStudy, tmp_path: Path
) -> None:
    """Older rows embed a signed URL, newer ones need the downloadPath mint; both must work.
    A failed recording names no file, and the SDK says so."""
    recordings = client.get_recordings(sim.experiment_ids[0], output="dict", progress=False)
    assert {"downloadUrl" in r for r in recordings} == {True, False}
    failed = [r for r in recordings if r["status"] == "failed"]
    assert failed
    for rec in failed:
        with pytest.raises(ValueError, match="no downloadUrl or url"):
            client.download_recording(rec, output_dir=str(tmp_path))
    for rec in (r for r in recordings if r not in failed):
        path = client.download_recording(rec, output_dir=str(tmp_path))
        size = sim.dataset.media_size(rec["roomId"], rec["recordingId"])
        assert rec.get("fileSize", size) == size
        assert path.read_bytes() == sim.dataset.media_bytes(
            rec["roomId"], rec["recordingId"], 0, size
        )
