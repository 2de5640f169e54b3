"""The command line of sharded and whole-key downloads: `download --shard K/N`, the SLURM
array variables that stand for it, `download --all`, and `plan --shards N`, which writes the
shards' plan before them. Turns them into the list of (experiment, assignment) the download
command archives one by one."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.config import Settings
from hyperstudy_bulk.errors import ConfigError
from hyperstudy_bulk.ledger import shared_budget
from hyperstudy_bulk.plan import Shard, parse_shard, shard_from_slurm
from hyperstudy_bulk.runner import Assignment
from hyperstudy_bulk.shards import PLANNER, agree_on_plan, list_experiments

Work = list[tuple[str, Assignment | None]]


def add_shard_options(download: argparse.ArgumentParser) -> None:
    download.add_argument(
        "--shard",
        metavar="K/N",
        help="fetch only shard K of N of the job (1 <= K <= N); inside a SLURM array task it "
        "defaults to the task's place in the array. Join the shards with `merge`",
    )
    _add_all(download, "every experiment the API key can see, each into its own folder")


def add_plan_shard_options(plan: argparse.ArgumentParser) -> None:
    plan.add_argument(
        "--shards",
        type=_count,
        metavar="N",
        help="write into --out the plan that N shards of the same download will share, so "
        "they start without surveying (needed where --out has no file locks)",
    )
    plan.add_argument("--out", metavar="DIR", help="with --shards: the download's --out")
    _add_all(plan, "with --shards: every experiment the API key can see")


def _add_all(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--all", dest="all_experiments", action="store_true", help=help_text)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 2:
        raise argparse.ArgumentTypeError(f"--shards takes a number of shards, 2 or more: {text!r}")
    return int(text)


def resolve_shard(text: str | None, environ: Mapping[str, str]) -> tuple[Shard | None, str]:
    """The shard this process fetches (None: the whole job) and where that came from. Raises
    ConfigError for a malformed --shard or SLURM array."""
    try:
        if text is not None:
            return parse_shard(text), "--shard"
        shard = shard_from_slurm(environ)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if shard is None:
        return None, ""
    source = f"SLURM array task {environ['SLURM_ARRAY_TASK_ID']}"
    return (shard if shard.count > 1 else None), source


def check_targets(ids: Sequence[str], *, all_experiments: bool, update: bool) -> None:
    if all_experiments and ids:
        raise ConfigError("give experiment ids or --all, not both")
    if not (all_experiments or ids):
        raise ConfigError("name at least one EXPERIMENT_ID, or pass --all")
    if update and all_experiments:
        raise ConfigError("--update takes archive folders (DIR/EXPERIMENT_ID), not --all")


def check_plan_targets(ids: Sequence[str], args: argparse.Namespace) -> None:
    """A plain `plan` writes nothing and takes experiment ids."""
    for given, option in ((args.out, "--out"), (args.all_experiments, "--all")):
        if given:
            raise ConfigError(f"plan {option} comes with --shards N (the shards' plan)")
    if not ids:
        raise ConfigError("name at least one EXPERIMENT_ID to plan")


async def write_shard_plan(
    settings: Settings, ids: Sequence[str], args: argparse.Namespace, *, say: Callable[[str], None]
) -> None:
    """`plan EXP --out DIR --shards N`: survey once and write the plan the N shards read
    (or read the one already there). Raises what agree_on_plan raises."""
    check_targets(ids, all_experiments=args.all_experiments, update=False)
    count: int = args.shards
    budget = shared_budget(settings, log=say, shards=count)
    async with Downloader(settings, budget=budget) as downloader:
        plans = await agree_on_plan(
            downloader.api,
            settings,
            None if args.all_experiments else ids,
            count,
            who=PLANNER,
            log=say,
        )
    for index in range(1, count + 1):
        streams = sum(s.shard == index for plan in plans for s in plan.streams)
        requests = sum(plan.requests_of(index) for plan in plans)
        print(f"shard {index}/{count}: {streams} stream(s), about {requests:,} planned requests")


async def plan_work(
    downloader: Downloader,
    experiment_ids: Sequence[str] | None,
    shard: Shard | None,
    *,
    source: str,
    say: Callable[[str], None],
) -> Work:
    """What this process archives: each experiment whole, or its shard's streams of each."""
    if shard is None:
        if experiment_ids is None:
            experiment_ids = await list_experiments(downloader.api)
            say(f"--all: {len(experiment_ids)} experiment(s) visible to the key")
        return [(experiment_id, None) for experiment_id in experiment_ids]
    plans = await agree_on_plan(
        downloader.api,
        downloader.settings,
        experiment_ids,
        shard.count,
        who=f"shard {shard}",
        log=say,
    )
    mine = sum(plan.requests_of(shard.index) for plan in plans)
    every = sum(plan.requests_of(k) for plan in plans for k in range(1, shard.count + 1))
    streams = sum(len(plan.assignment(shard).streams) for plan in plans)
    say(
        f"shard {shard} (from {source}): {streams} stream(s), about {mine:,} of the job's "
        f"{every:,} planned requests"
    )
    for plan in plans:
        if plan.note:
            say(f"{plan.experiment_id}: {plan.note}")
    return [
        (plan.experiment_id, plan.assignment(shard))
        for plan in plans
        if plan.assignment(shard).streams
    ]
