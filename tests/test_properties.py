"""Property-based tests (hypothesis) of the pure parts: file names for untrusted ids and the
planner. (Pagination's properties are in test_pagination.py.)"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

from hypothesis import given, settings
from hypothesis import strategies as st

from hyperstudy_bulk.config import Granularity
from hyperstudy_bulk.datatypes import ALL_DATA_TYPES
from hyperstudy_bulk.plan import Room, plan_streams
from hyperstudy_bulk.sinks import MAX_NAME, safe_name

ids = st.text(min_size=0, max_size=300)


UNSAFE_ANYWHERE = set('/\\:*?"<>|')


@given(ids)
def test_a_safe_name_is_one_harmless_path_component(identifier: str) -> None:
    name = safe_name(identifier)
    assert name
    assert len(name.encode()) <= MAX_NAME
    assert not set(name) & UNSAFE_ANYWHERE
    assert not name.startswith(".")
    assert not name.endswith((".", " "))
    assert ".." not in name
    assert name.isprintable()
    assert unicodedata.is_normalized("NFC", name)


@given(st.text(st.characters(codec=None), max_size=40))
def test_names_not_cut_short_decode_back_to_their_id(identifier: str) -> None:
    name = safe_name(identifier)
    if identifier and "~" not in name:  # "~" marks an id cut short or not in NFC, and hashed
        assert unquote(name, errors="surrogatepass") == identifier
    if (
        unicodedata.is_normalized("NFC", identifier)
        and len(identifier.encode("utf-8", "surrogatepass")) * 3 <= MAX_NAME
    ):
        assert "~" not in name


@given(ids, st.integers(20, 200))
def test_a_cut_name_keeps_whole_characters_and_ends_in_a_hash(identifier: str, limit: int) -> None:
    name = safe_name(identifier, limit)
    whole = unquote(safe_name(identifier, 10**6), errors="surrogatepass")
    assert len(name.encode()) <= limit
    if "~" in name:
        kept, digest = name.rsplit("~", 1)
        assert len(digest) == 16
        assert whole.startswith(unquote(kept, errors="surrogatepass"))


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
