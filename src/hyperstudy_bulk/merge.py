"""`merge`: join the shards' manifest parts into the one manifest.json that verify, download,
load and export read. Manifest arithmetic only: no HTTP, and no data file is touched.

The experiment's shard plan says which shard owns which stream; a shard with streams whose
part is missing, or whose part is not complete, is named, and nothing is written. The merged
manifest is a function of the parts alone (streams in the plan's order, media by path, the
request figures summed), so merging again gives the same file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperstudy_bulk.lock import archive_lock
from hyperstudy_bulk.manifest import MANIFEST_NAME, Manifest, load_manifest
from hyperstudy_bulk.plan import Shard
from hyperstudy_bulk.shards import part_name, read_plan


@dataclass(frozen=True)
class MergeRefused(Exception):
    """A shard's part is missing or incomplete; `message` names it and what to do."""

    message: str

    def __str__(self) -> str:
        return self.message


def merge_parts(folder: Path, *, unlocked: Callable[[str], None] | None = None) -> Manifest:
    """Write `folder/manifest.json` from the shards' parts and return it. Raises OSError or
    ValueError when the folder holds no shard plan, MergeRefused when a part is missing or
    incomplete, BusyError when a download is writing the archive (`unlocked` is told when the
    file system has no locks to tell)."""
    plan = read_plan(folder)
    if (folder / MANIFEST_NAME).is_file():
        merged_before = load_manifest(folder)
        if merged_before.snapshots != [plan.snapshot]:
            raise MergeRefused(
                f"{folder / MANIFEST_NAME} was updated after the shards' snapshot (to "
                f"{merged_before.snapshot_end_time}): it is the archive now, and merging the "
                "parts again would drop what the update added"
            )
    owners = {s.spec.key: s.shard for s in plan.streams}
    parts: list[Manifest] = []
    for index in sorted(set(owners.values())):
        shard = Shard(index, plan.shards)
        try:
            part = load_manifest(folder, part_name(shard))
        except FileNotFoundError:
            raise MergeRefused(
                f"shard {shard} has not written its part ({folder / part_name(shard)}): run "
                f"`download ... --shard {shard}` (or its array task) to the end, then merge"
            ) from None
        if not part.complete:
            missing = len(part.incomplete_streams) or "its"
            raise MergeRefused(
                f"shard {shard} is not complete ({missing} stream(s) unfinished, see "
                f"{folder / part_name(shard)}): run it again, then merge"
            )
        parts.append(part)
    order = {key: i for i, key in enumerate(owners)}
    merged = Manifest(
        experiment_id=plan.experiment_id,
        base_url=parts[0].base_url,
        snapshot_end_time=plan.snapshot,
        snapshots=[plan.snapshot],
        granularity=plan.granularity.value,
        page_size=parts[0].page_size,
        data_types=list(dict.fromkeys(t for p in parts for t in p.data_types)),
        created_at=min(p.created_at for p in parts),
        updated_at=max(p.updated_at for p in parts),
        streams=sorted(
            (s for p in parts for s in p.streams if owners.get(s.key) is not None),
            key=lambda s: (order[s.key], s.window),
        ),
        media=sorted((m for p in parts for m in p.media), key=lambda m: m.path),
        requests=_summed([p.requests for p in parts]),
        page_sizes=_smallest([p.page_sizes for p in parts]),
    )
    merged.complete = {s.key for s in merged.streams} == set(owners) and all(
        s.status == "complete" for s in merged.streams
    )
    with archive_lock(folder, unlocked=unlocked):  # no plain download writes the manifest meanwhile
        merged.save(folder, MANIFEST_NAME)
    return merged


def _smallest(learned: list[dict[str, int]]) -> dict[str, int]:
    """Each data type's page size that worked in every part that learned one (the smallest is
    the one the server surely accepts when --update resumes from the merged manifest)."""
    sizes: dict[str, int] = {}
    for part in learned:
        for folder, size in part.items():
            sizes[folder] = min(size, sizes.get(folder, size))
    return dict(sorted(sizes.items()))


def _summed(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts' request figures added up (numbers and mappings of numbers)."""
    total: dict[str, Any] = {}
    for figure in figures:
        for name, value in figure.items():
            if isinstance(value, dict):
                counter = Counter(total.get(name, {}))
                counter.update(value)
                total[name] = dict(sorted(counter.items()))
            else:
                total[name] = round(total.get(name, 0) + value, 3)
    return total
