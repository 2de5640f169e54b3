"""Sharding is pure: K/N parsing, SLURM array variables, and a split balanced by requests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperstudy_bulk.config import Granularity
from hyperstudy_bulk.datatypes import ALL_DATA_TYPES, CHAT, EVENTS, EYETRACKING
from hyperstudy_bulk.plan import (
    Room,
    Shard,
    finest_useful,
    makespan,
    parse_shard,
    plan_streams,
    shard_from_slurm,
    split_by_weight,
    weigh_streams,
)


def test_shard_text_is_k_of_n() -> None:
    assert parse_shard("2/3") == Shard(2, 3)
    assert parse_shard(" 1/1 ") == Shard(1, 1)


@pytest.mark.parametrize("text", ["0/3", "4/3", "a/b", "3", "1/0", "-1/3", "1/3/5", ""])
def test_bad_shard_text_says_what_is_allowed(text: str) -> None:
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)


def slurm(task: int, first: int, count: int, step: int | None = None) -> dict[str, str]:
    environ = {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": str(first),
        "SLURM_ARRAY_TASK_COUNT": str(count),
    }
    if step is not None:
        environ["SLURM_ARRAY_TASK_STEP"] = str(step)
    return environ


@pytest.mark.parametrize(
    ("environ", "shard"),
    [
        (slurm(0, 0, 4), Shard(1, 4)),
        (slurm(3, 0, 4), Shard(4, 4)),
        (slurm(1, 1, 3), Shard(1, 3)),
        (slurm(3, 1, 3), Shard(3, 3)),
        (slurm(7, 7, 1), Shard(1, 1)),
        (slurm(12, 10, 3), Shard(3, 3)),
        (slurm(7, 3, 5, step=2), Shard(3, 5)),
    ],
)
def test_slurm_array_task_maps_to_its_position(environ: dict[str, str], shard: Shard) -> None:
    assert shard_from_slurm(environ) == shard


def test_outside_an_array_there_is_no_shard() -> None:
    assert shard_from_slurm({}) is None
    assert shard_from_slurm({"SLURM_JOB_ID": "42"}) is None


@pytest.mark.parametrize("environ", [slurm(5, 1, 3), slurm(0, 1, 3), slurm(4, 3, 5, step=2)])
def test_a_task_outside_its_array_is_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="--array=1-4"):
        shard_from_slurm(environ)


def test_split_is_balanced_by_requests_not_by_count() -> None:
    weights = [10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    keys = [f"s{i:02d}" for i in range(len(weights))]
    shards = split_by_weight(keys, weights, 2)
    loads = {k: sum(w for w, s in zip(weights, shards, strict=True) if s == k) for k in (1, 2)}
    assert loads == {1: 10, 2: 10}
    assert shards[0] != shards[1]


def test_split_does_not_depend_on_the_order_items_come_in() -> None:
    keys, weights = ["a", "b", "c", "d"], [3, 3, 2, 2]
    forward = dict(zip(keys, split_by_weight(keys, weights, 2), strict=True))
    backward = dict(zip(keys[::-1], split_by_weight(keys[::-1], weights[::-1], 2), strict=True))
    assert forward == backward


@given(st.lists(st.integers(1, 500), min_size=1, max_size=60), st.integers(1, 8))
def test_every_item_gets_one_shard_and_loads_are_near_even(weights: list[int], n: int) -> None:
    keys = [str(i) for i in range(len(weights))]
    shards = split_by_weight(keys, weights, n)
    assert all(1 <= s <= n for s in shards)
    loads = [
        sum(w for w, s in zip(weights, shards, strict=True) if s == k) for k in range(1, n + 1)
    ]
    # Greedy onto the least loaded: the heaviest exceeds the mean by at most one item.
    assert max(loads) <= sum(weights) / n + max(weights)


def test_stream_weight_is_its_share_of_the_type_total() -> None:
    rooms = [Room("r1"), Room("r2"), Room("r3"), Room("r4")]
    streams = plan_streams("exp", [EVENTS, EYETRACKING], Granularity.ROOM, rooms)
    weights = weigh_streams(streams, totals={EVENTS: 400, EYETRACKING: 40_000}, page_size=100)
    assert weights == [1, 1, 1, 1, 100, 100, 100, 100]


def test_one_heavy_stream_makes_a_finer_granularity_win() -> None:
    rooms = [Room(f"r{i}") for i in range(6)]
    totals = {dt: 1000 for dt in ALL_DATA_TYPES} | {EYETRACKING: 60_000, CHAT: 100}
    candidates = [
        weigh_streams(plan_streams("exp", ALL_DATA_TYPES, g, rooms), totals=totals, page_size=100)
        for g in (Granularity.EXPERIMENT, Granularity.ROOM)
    ]
    assert makespan(candidates[0], 3) == 600  # the eye-tracking stream alone
    assert finest_useful(candidates, 3) == 1
    # One shard: the coarser costs fewer requests, so it stays.
    assert finest_useful(candidates, 1) == 0
