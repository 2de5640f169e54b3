"""Shards of one job: N processes (a SLURM array's tasks) that together fetch what one would,
each only its own streams, agreeing on one plan and one snapshot with no step before them.

The first shard to take the job's lock in --out surveys (the experiments, their rooms, one
1-record page per data type) and writes the plan; the others wait at the lock and read it, so
the survey's requests are spent once. A shard that dies while surveying releases the lock
with its process, and the next one surveys. Files:

    <out>/.hyperstudy/plan-<job>.json        the job's experiments, written last: once it
                                             exists the plan is whole
    <out>/<experiment>/.shards/plan.json     the snapshot, the granularity, and every stream
                                             with its planned requests and shard (merge reads it)
    <out>/<experiment>/.shards/part-K-of-N.json   shard K's manifest part

A shard writes only its streams' files, checkpoints and media, and its own manifest part, so
no two shards ever write the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from hyperstudy_bulk.client import ApiClient
from hyperstudy_bulk.config import Granularity, Settings
from hyperstudy_bulk.datatypes import Scope, data_type_named
from hyperstudy_bulk.errors import BusyError, ConfigError, LocksUnavailable, StorageError
from hyperstudy_bulk.ledger import LEDGER_DIR
from hyperstudy_bulk.lock import exclusive
from hyperstudy_bulk.manifest import atomic_write
from hyperstudy_bulk.plan import (
    Shard,
    StreamSpec,
    finest_useful,
    plan_streams,
    split_by_weight,
    weigh_streams,
)
from hyperstudy_bulk.runner import Assignment, experiment_folder, prepare_folder
from hyperstudy_bulk.survey import survey_experiment
from hyperstudy_bulk.timespec import iso_utc

SHARDS_DIR = ".shards"
PLAN_NAME = f"{SHARDS_DIR}/plan.json"
PLANNER = "plan --shards"
"""Who writes a plan before the shards start."""
EXPERIMENTS_PAGE = 50
"""The experiments listing is paged as the official SDK pages it."""


def part_name(shard: Shard) -> str:
    return f"{SHARDS_DIR}/part-{shard.index}-of-{shard.count}.json"


@dataclass(frozen=True)
class PlannedStream:
    spec: StreamSpec
    requests: int
    shard: int


@dataclass(frozen=True)
class ExperimentPlan:
    """One experiment's part of a sharded job, as every shard reads it."""

    experiment_id: str
    snapshot: str
    granularity: Granularity
    shards: int
    streams: list[PlannedStream]
    note: str = ""
    """Why the granularity is finer than a single process would choose, if it is."""

    def assignment(self, shard: Shard) -> Assignment:
        return Assignment(
            streams=[s.spec for s in self.streams if s.shard == shard.index],
            snapshot=self.snapshot,
            granularity=self.granularity,
            manifest_name=part_name(shard),
        )

    def requests_of(self, shard: int) -> int:
        return sum(s.requests for s in self.streams if s.shard == shard)

    def to_json(self) -> bytes:
        streams = [
            {
                "key": s.spec.key,
                "data_type": s.spec.data_type.folder,
                "scope": s.spec.scope.value,
                "scope_id": s.spec.scope_id,
                "room_id": s.spec.room_id,
                "stem": s.spec.stem,
                "requests": s.requests,
                "shard": s.shard,
            }
            for s in self.streams
        ]
        document = {
            "experiment_id": self.experiment_id,
            "snapshot": self.snapshot,
            "granularity": self.granularity.value,
            "shards": self.shards,
            "note": self.note,
            "streams": streams,
        }
        return orjson.dumps(document, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> ExperimentPlan:
        document: dict[str, Any] = orjson.loads(data)
        streams = [
            PlannedStream(
                StreamSpec(
                    data_type_named(s["data_type"]),
                    Scope(s["scope"]),
                    s["scope_id"],
                    s["stem"],
                    room_id=s["room_id"],
                ),
                s["requests"],
                s["shard"],
            )
            for s in document["streams"]
        ]
        return cls(
            experiment_id=document["experiment_id"],
            snapshot=document["snapshot"],
            granularity=Granularity(document["granularity"]),
            shards=document["shards"],
            streams=streams,
            note=document["note"],
        )


def read_plan(folder: Path) -> ExperimentPlan:
    """The shard plan in an experiment's folder (raises OSError/ValueError/KeyError)."""
    return ExperimentPlan.from_json((folder / PLAN_NAME).read_bytes())


def _job_path(settings: Settings, experiment_ids: Sequence[str] | None, count: int) -> Path:
    """The job's plan file: named by what makes two commands the same job."""
    job = orjson.dumps(
        {
            "experiments": sorted(experiment_ids) if experiment_ids is not None else "--all",
            "data_types": [dt.folder for dt in settings.data_types],
            "granularity": settings.granularity.value,
            "page_size": settings.page_size,
            "shards": count,
        }
    )
    return settings.out / LEDGER_DIR / f"plan-{hashlib.sha256(job).hexdigest()[:16]}.json"


async def agree_on_plan(
    api: ApiClient,
    settings: Settings,
    experiment_ids: Sequence[str] | None,
    count: int,
    *,
    who: str,
    log: Callable[[str], None],
    now: datetime | None = None,
) -> list[ExperimentPlan]:
    """The plan of a job of `count` shards, surveyed by whichever comes first (`experiment_ids`
    None: every experiment the key can see): a shard, or `plan --shards` before them (`who`
    is None). Where --out has no file locks, a shard can only read a plan written before it.
    Raises ExperimentNotFound, AuthError, ConfigError."""
    if settings.room or settings.participant or settings.since or settings.until:
        raise ConfigError(
            f"{who}: the shards split whole experiments: drop --room, --participant, --since "
            "and --until, or download the subset as one process (without --shard)"
        )
    job = _job_path(settings, experiment_ids, count)
    with contextlib.ExitStack() as held:
        try:
            await _wait_for_lock(held, job.with_suffix(".lock"))
        except LocksUnavailable as error:
            if who != PLANNER and not job.exists():
                targets = " ".join(experiment_ids) if experiment_ids is not None else "--all"
                raise ConfigError(
                    f"{error}, so the shards cannot agree on a plan by themselves: write it "
                    f"first with `hyperstudy-bulk plan {targets} --out {settings.out} --shards "
                    f"{count}` (with the download's other options)"
                ) from None
        except StorageError as error:
            raise ConfigError(f"{error}: the shards need a writable --out") from None
        if job.exists():
            ids: list[str] = orjson.loads(job.read_bytes())["experiments"]
            plans = [read_plan(experiment_folder(settings.out, i)) for i in ids]
            log(f"{who}: read the plan another shard (or `plan --shards`) made ({job.name})")
            return plans
        ids = list(experiment_ids) if experiment_ids is not None else await list_experiments(api)
        for experiment_id in ids:
            folder = experiment_folder(settings.out, experiment_id)
            prepare_folder(folder)
            _check_unplanned(folder, count)
        plans = await survey_job(api, settings, ids, count, now=now)
        for plan in plans:
            atomic_write(
                experiment_folder(settings.out, plan.experiment_id) / PLAN_NAME, plan.to_json()
            )
        atomic_write(job, orjson.dumps({"experiments": ids}))
        log(f"{who}: surveyed {len(ids)} experiment(s) for {count} shards")
        return plans


async def _wait_for_lock(held: contextlib.ExitStack, path: Path) -> None:
    """Take the lock at `path` into `held`, waiting while another shard holds it (polling:
    the holder is another process, maybe on another node; the wait stays cancellable)."""
    while True:
        try:
            held.enter_context(exclusive(path, what="the shard plan"))
            return
        except BusyError:
            await asyncio.sleep(0.05)


def _check_unplanned(folder: Path, count: int) -> None:
    """A folder planned for another number of shards would get a second snapshot mixed in."""
    if (folder / PLAN_NAME).is_file():
        planned = read_plan(folder).shards
        if planned != count:
            raise ConfigError(
                f"{folder} is being archived by {planned} shards: run {planned} shards "
                f"(--shard K/{planned}), or choose another --out"
            )


async def list_experiments(api: ApiClient) -> list[str]:
    """Every experiment id the key can see (GET /experiments, paged)."""
    ids: list[str] = []
    offset = 0
    while True:
        page = await api.get_page(
            "experiments",
            ("experiments",),
            {},
            offset=offset,
            limit=EXPERIMENTS_PAGE,
            id_field="id",
        )
        ids.extend(str(i) for i in page.ids if i is not None)
        if not page.has_more or page.end <= offset:
            return list(dict.fromkeys(ids))
        offset = page.end


async def survey_job(
    api: ApiClient,
    settings: Settings,
    experiment_ids: Sequence[str],
    count: int,
    *,
    now: datetime | None = None,
) -> list[ExperimentPlan]:
    """Survey each experiment, choose its granularity for `count` shards, and split every
    experiment's streams together by planned requests."""
    snapshot = iso_utc(now or datetime.now(UTC))
    chosen: list[tuple[str, Granularity, list[StreamSpec], list[int], str]] = []
    surveys = [await survey_experiment(api, settings, i) for i in experiment_ids]
    everything = sum(sum(s.requests_by_type.values()) for s in surveys)
    for survey in surveys:
        own = sum(survey.requests_by_type.values())
        # Each experiment gets the shards its share of the requests is worth.
        shards = max(1, math.ceil(count * own / max(1, everything)))
        options = [survey.granularity]
        if survey.granularity is Granularity.EXPERIMENT and survey.rooms_complete and survey.rooms:
            options.append(Granularity.ROOM)
        candidates = [
            plan_streams(survey.experiment_id, settings.data_types, g, survey.listed_rooms)
            for g in options
        ]
        per_candidate = [
            weigh_streams(c, totals=survey.totals, page_size=survey.page_size) for c in candidates
        ]
        auto = settings.granularity is Granularity.AUTO
        pick = finest_useful(per_candidate, shards) if auto else 0
        if pick == 0 and len(candidates[0]) < shards and len(candidates) > 1:
            pick = 1
        note = (
            f"granularity {options[pick]} instead of {options[0]}: {len(candidates[0])} "
            f"streams at {options[0]} cannot keep {shards} shards evenly busy"
            if pick
            else ""
        )
        chosen.append(
            (survey.experiment_id, options[pick], candidates[pick], per_candidate[pick], note)
        )
    keys = [f"{exp}\n{spec.key}" for exp, _, specs, _, _ in chosen for spec in specs]
    weights = [w for *_, ws, _ in chosen for w in ws]
    shard_of = iter(split_by_weight(keys, weights, count))
    return [
        ExperimentPlan(
            experiment_id=exp,
            snapshot=snapshot,
            granularity=granularity,
            shards=count,
            streams=[
                PlannedStream(spec, weight, next(shard_of))
                for spec, weight in zip(specs, ws, strict=True)
            ],
            note=note,
        )
        for exp, granularity, specs, ws, note in chosen
    ]
