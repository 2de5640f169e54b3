"""Property-based tests (hypothesis) of the pure parts: file names for untrusted ids and the
planner. (Pagination's properties are in test_pagination.py.)"""

from __future__ import annotations

from urllib.parse import unquote

from hypothesis import given, settings
from hypothesis import strategies as st

from hyperstudy_bulk.config import Granularity
from hyperstudy_bulk.datatypes import ALL_DATA_TYPES
from hyperstudy_bulk.plan import Room, plan_streams
from hyperstudy_bulk.sinks import MAX_NAME, safe_name

ids = st.text(min_size=0, max_size=300)


@given(ids)
def test_a_safe_name_is_one_harmless_path_component(identifier: str) -> None:
    name = safe_name(identifier)
    assert name
    assert len(name) <= MAX_NAME
    assert not set(name) & {"/", "\\", "\x00"}
    assert not name.startswith(".")
    assert name.isascii()
    assert name.isprintable()


@given(st.text(st.characters(codec=None), max_size=40))
def test_names_not_cut_short_decode_back_to_their_id(identifier: str) -> None:
    name = safe_name(identifier)
    if identifier and "~" not in name:  # "~" only marks a long id cut short and hashed
        assert unquote(name, errors="surrogatepass") == identifier


def test_a_lone_surrogate_in_an_id_is_named_too() -> None:
    assert unquote(safe_name("a\ud800b"), errors="surrogatepass") == "a\ud800b"


@given(ids, ids)
def test_different_ids_never_share_a_name(first: str, second: str) -> None:
    if first != second:
        assert safe_name(first) != safe_name(second)


rooms = st.lists(st.builds(Room, ids, st.lists(ids, max_size=3).map(tuple)), max_size=6)


@settings(max_examples=150, deadline=None)
@given(rooms, st.sampled_from([Granularity.EXPERIMENT, Granularity.ROOM, Granularity.PARTICIPANT]))
def test_every_stream_has_its_own_files_inside_its_folder(
    listed: list[Room], granularity: Granularity
) -> None:
    streams = plan_streams("exp", ALL_DATA_TYPES, granularity, listed)
    keys = [s.key for s in streams]
    assert len(keys) == len(set(keys))
    stems = [s.stem.casefold() for s in streams]
    assert len(stems) == len(set(stems))
    for stream in streams:
        folder, _, rest = stream.stem.partition("/")
        assert folder == stream.data_type.folder
        assert all(part not in ("", ".", "..") for part in rest.split("/"))


@settings(max_examples=150, deadline=None)
@given(rooms)
def test_the_plan_is_the_same_for_the_same_inputs(listed: list[Room]) -> None:
    first = plan_streams("exp", ALL_DATA_TYPES, Granularity.PARTICIPANT, listed)
    assert first == plan_streams("exp", ALL_DATA_TYPES, Granularity.PARTICIPANT, listed)
    unique_rooms = {room.id for room in listed}
    per_room = {s.scope_id for s in first if s.scope.value == "room"}
    assert per_room <= unique_rooms
