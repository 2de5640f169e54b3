"""`load()` and `iter_frames()`: an archived data type as the official SDK's pandas DataFrame.

The conversion is the one hyperstudy 0.4.x applies to what `get_events(..., output="pandas")`
and its siblings fetched (its `_dataframe.to_pandas`), step for step, so that a notebook written
against the SDK runs unchanged on an archive:

1. when the *first* record's `sparseRatingData` / `metadata` is an object, every record gains
   `<field>_<subkey>` columns for that field's keys (the nested object stays too);
2. `pandas.DataFrame(records)`: columns in order of first appearance, dtypes inferred;
3. `timestamp`, `startTime`, `endTime`, `createdAt`, `updatedAt` parsed by
   `pandas.to_datetime(errors="coerce")`; `onset_sec` = `onset` / 1000.

No records gives an empty DataFrame without columns, as the SDK's does.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hyperstudy_bulk.analysis.records import (
    TIMESTAMP_COLUMNS,
    Record,
    Selection,
    flatten,
    flatten_targets,
    iter_records,
)
from hyperstudy_bulk.archive import Archive, ArchiveError

DERIVED = {"onset_sec": "onset"}
"""Columns the conversion computes, and the field each is computed from."""


def sdk_frame(records: list[Record]) -> pd.DataFrame:
    """The SDK's DataFrame of already flattened records (steps 2 and 3 above)."""
    if not records:
        return pd.DataFrame()
    frame = pd.DataFrame(records)
    if frame.empty:
        return frame
    for column in TIMESTAMP_COLUMNS:
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], errors="coerce")
    if "onset" in frame.columns:
        frame["onset_sec"] = pd.to_numeric(frame["onset"], errors="coerce") / 1000.0
    return frame


class _Projection:
    """Keeps only the fields that the requested columns need, before the frame is built:
    pandas infers each column's dtype from that column alone, so the result is the same."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        needed = set(columns) | {DERIVED[c] for c in columns if c in DERIVED}
        self.needed = needed

    def apply(self, records: list[Record]) -> list[Record]:
        needed = self.needed
        return [{k: v for k, v in record.items() if k in needed} for record in records]

    def select(self, frame: pd.DataFrame) -> pd.DataFrame:
        if frame.columns.empty and len(frame) == 0:
            return frame
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ArchiveError(
                f"no column {', '.join(map(repr, missing))} in these records; ask for columns "
                "that load() without `columns` returns"
            )
        return frame[self.columns]


def _batches(
    archive: Path | str,
    data_type: str,
    columns: Sequence[str] | None,
    rooms: Collection[str] | None,
    participants: Collection[str] | None,
    allow_incomplete: bool,
) -> tuple[Iterator[list[Record]], _Projection | None]:
    opened = Archive.open(archive)
    kind = opened.data_type(data_type)
    selection = Selection.of(rooms, participants)
    projection = None if columns is None else _Projection(columns)
    return iter_records(opened, kind, selection, allow_incomplete=allow_incomplete), projection


def _prepare(
    batch: list[Record], targets: tuple[str, ...], projection: _Projection | None
) -> list[Record]:
    flat = flatten(batch, targets)
    return flat if projection is None else projection.apply(flat)


def load(
    archive: Path | str,
    data_type: str,
    *,
    columns: Sequence[str] | None = None,
    rooms: Collection[str] | None = None,
    participants: Collection[str] | None = None,
    allow_incomplete: bool = False,
) -> pd.DataFrame:
    """One data type of the archive in `archive` (a folder DIR/EXPERIMENT_ID) as the DataFrame
    the official SDK returns for the same records. Rows in the API's order for an
    experiment-granularity archive, in time order otherwise. `columns` keeps only those (in
    that order); `rooms` / `participants` keep only their records. Reads only the files the
    manifest lists for this data type. Raises ArchiveError (not an archive, no such data type
    or column) and IncompleteDataError (a stream is not complete, unless `allow_incomplete`)."""
    batches, projection = _batches(
        archive, data_type, columns, rooms, participants, allow_incomplete
    )
    records: list[Record] = []
    targets: tuple[str, ...] | None = None
    for batch in batches:
        if targets is None:
            targets = flatten_targets(batch[0])
        records.extend(_prepare(batch, targets, projection))
    frame = sdk_frame(records)
    return frame if projection is None else projection.select(frame)


def iter_frames(
    archive: Path | str,
    data_type: str,
    *,
    rows: int = 100_000,
    columns: Sequence[str] | None = None,
    rooms: Collection[str] | None = None,
    participants: Collection[str] | None = None,
    allow_incomplete: bool = False,
) -> Iterator[pd.DataFrame]:
    """`load()` in DataFrames of at most `rows` rows, for archives larger than memory; their
    index continues from frame to frame. Each frame's dtypes are inferred from its own rows (a
    column without a value in one frame may have another dtype there): `export` writes one
    schema for the whole data type. Raises as `load()` does."""
    if rows < 1:
        raise ValueError("rows must be >= 1")
    batches, projection = _batches(
        archive, data_type, columns, rooms, participants, allow_incomplete
    )
    targets: tuple[str, ...] | None = None
    pending: list[Record] = []
    start = 0
    for batch in batches:
        if targets is None:
            targets = flatten_targets(batch[0])
        pending.extend(_prepare(batch, targets, projection))
        while len(pending) >= rows:
            yield _frame(pending[:rows], start, projection)
            del pending[:rows]
            start += rows
    if pending:
        yield _frame(pending, start, projection)


def _frame(records: list[Any], start: int, projection: _Projection | None) -> pd.DataFrame:
    frame = sdk_frame(records)
    frame.index = pd.RangeIndex(start, start + len(frame))
    return frame if projection is None else projection.select(frame)
