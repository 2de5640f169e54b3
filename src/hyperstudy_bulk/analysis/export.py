"""`hyperstudy-bulk export`: each data type of an archive as one Parquet or CSV file, in bounded
memory, with the columns `load()` gives.

Batches in, row groups out: records are read a few MiB at a time, converted to `load()`'s
columns (by pyarrow's JSON reader where the values are plain, else exactly as frames.py converts
them; see `_tables`), and spooled as Arrow tables to uncompressed Arrow IPC files beside the
output. A field that first appears late, or whose type widens (an integer column that later
holds a missing value), only changes the schema: once every batch is spooled their schemas are
unified (`pyarrow.unify_schemas`, permissive), and each spooled batch, cast to that one schema
(absent columns as nulls), becomes a row group of the Parquet file or rows of the CSV.
Memory holds one batch; the spool costs one write and one memory-mapped read of the data.

Nested values that are not flattened (`response`, `config`, `recipientIds`, the objects behind
`metadata_*` columns, ...) and columns whose values mix types are written as JSON text,
losslessly; the file's schema metadata lists those columns under `hyperstudy_bulk.json_columns`
(a JSON array) so a reader can decode them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from hyperstudy_bulk.analysis.frames import (
    TIMESTAMP_COLUMNS,
    flatten_targets,
    iter_frames,
    sdk_frame,
)
from hyperstudy_bulk.analysis.records import Record
from hyperstudy_bulk.archive import Archive, ArchiveError, read_lines
from hyperstudy_bulk.datatypes import DataType, Scope
from hyperstudy_bulk.manifest import StreamEntry

FORMATS = ("parquet", "csv")
JSON_COLUMNS_KEY = b"hyperstudy_bulk.json_columns"
BATCH_ROWS = 25_000
PARQUET_INSTALL = "pip install 'hyperstudy-bulk[parquet]'"


class MissingExtraError(ArchiveError):
    """An optional dependency is not installed; the message names the pip command."""


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.csv
        import pyarrow.ipc
        import pyarrow.json
        import pyarrow.parquet
    except ImportError:
        raise MissingExtraError(f"export needs pyarrow: {PARQUET_INSTALL}") from None
    return pyarrow


def default_destination(folder: Path) -> Path:
    """Beside the archive, never inside it (verify would list the files as strays)."""
    return folder.parent / f"{folder.name}-export"


@dataclass(frozen=True)
class Exported:
    data_type: str
    path: Path
    rows: int


def export_archive(
    folder: Path | str,
    *,
    fmt: str = "parquet",
    to: Path | str | None = None,
    data_types: list[str] | None = None,
    allow_incomplete: bool = False,
    batch_rows: int = BATCH_ROWS,
    on_done: Callable[[Exported], None] = lambda done: None,
) -> list[Exported]:
    """Write `<data type>.<fmt>` per data type into `to` (default: beside the archive). Raises
    ArchiveError (not an archive, unknown data type, `to` inside the archive), MissingExtraError,
    IncompleteDataError (unless `allow_incomplete`) and OSError (the output cannot be written)."""
    if fmt not in FORMATS:
        raise ArchiveError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    pa = _pyarrow()
    archive = Archive.open(folder)
    destination = Path(to) if to is not None else default_destination(archive.folder)
    if destination.resolve().is_relative_to(archive.folder.resolve()):
        raise ArchiveError(
            f"--to {destination} is inside the archive {archive.folder}; "
            "choose a folder outside it (verify would flag the files)"
        )
    kinds = [archive.data_type(name) for name in (data_types or archive.manifest.data_types)]
    if not allow_incomplete:
        for kind in kinds:
            archive.require_complete(kind)
    destination.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in kinds:
        target = destination / f"{kind.folder}.{fmt}"
        rows = _export_type(pa, archive, kind, target, fmt, batch_rows, allow_incomplete)
        done = Exported(kind.folder, target, rows)
        on_done(done)
        written.append(done)
    return written


@dataclass
class _Spool:
    """Spooled batches and what is known of their columns so far."""

    folder: Path
    paths: list[Path] = field(default_factory=list)
    schemas: list[Any] = field(default_factory=list)
    json_in: list[set[str]] = field(default_factory=list)
    order: dict[str, None] = field(default_factory=dict)

    @property
    def json_columns(self) -> set[str]:
        return set().union(*self.json_in)


def _export_type(
    pa: Any,
    archive: Archive,
    kind: DataType,
    target: Path,
    fmt: str,
    batch_rows: int,
    allow_incomplete: bool,
) -> int:
    spool_dir = Path(tempfile.mkdtemp(prefix=f".{kind.folder}.", dir=target.parent))
    try:
        spool = _Spool(spool_dir)
        for table, json_columns in _tables(pa, archive, kind, batch_rows, allow_incomplete):
            path = spool_dir / f"{len(spool.paths):06d}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
            spool.paths.append(path)
            spool.schemas.append(table.schema)
            spool.json_in.append(json_columns)
            spool.order.update(dict.fromkeys(table.schema.names))
        schema = _unified(pa, spool)
        partial = target.with_name(f".{target.name}.part")
        try:
            rows = _write(pa, spool, schema, partial, fmt)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return rows
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)


def _tables(
    pa: Any, archive: Archive, kind: DataType, batch_rows: int, allow_incomplete: bool
) -> Iterator[tuple[Any, set[str]]]:
    """The data type as Arrow tables holding `load()`'s columns, with their JSON columns.

    Fast path: an experiment-scope data type whose first record has nothing to flatten is
    parsed by pyarrow's JSON reader, a few MiB at a time (C++, on every core), and only its
    timestamp columns go through pandas (`to_datetime`, as the SDK does). The first chunk the
    reader cannot give plain columns for (a nested object or list, a type that changes, a
    timestamp that is not text) sends the rest of the data type down the exact path: decoded
    records -> the SDK's DataFrame -> Arrow. Both give the same columns and values; the spool's
    schema unification makes their types agree."""
    streams = archive.streams(kind)
    first = _first_record(archive, streams)
    if first is None or flatten_targets(first) or any(s.scope != Scope.EXPERIMENT for s in streams):
        frames = iter_frames(
            archive.folder, kind.folder, rows=batch_rows, allow_incomplete=allow_incomplete
        )
        for frame in frames:
            yield _to_arrow(pa, frame)
        return
    exact = False
    for stream in streams:
        for listed in archive.files(stream):
            for chunk in read_lines(listed.path):
                for start in range(0, len(chunk), batch_rows):
                    lines = chunk[start : start + batch_rows]
                    table = None if exact else _columnar(pa, lines)
                    if table is None:
                        exact = True
                        frame = sdk_frame(list(map(orjson.loads, lines)))
                        if len(frame.columns):
                            yield _to_arrow(pa, frame)
                    else:
                        yield table, set()


def _first_record(archive: Archive, streams: list[StreamEntry]) -> Record | None:
    for stream in streams:
        for listed in archive.files(stream):
            for lines in read_lines(listed.path, chunk_bytes=1 << 16):
                first: Record = orjson.loads(lines[0])
                return first
    return None


def _columnar(pa: Any, lines: list[bytes]) -> Any:
    """The lines as a table of `load()`'s columns, or None when only the exact path can say
    what pandas would make of them."""
    try:
        table = pa.json.read_json(pa.py_buffer(b"\n".join(lines)))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if "onset_sec" in table.column_names or not table.num_columns:
        return None
    for column in table.schema:
        if pa.types.is_nested(column.type) or pa.types.is_temporal(column.type):
            return None  # pandas keeps nested values as objects, and text it was not asked to parse
        if column.name in TIMESTAMP_COLUMNS and not (
            pa.types.is_string(column.type) or pa.types.is_null(column.type)
        ):
            return None
    for name in TIMESTAMP_COLUMNS:
        if name in table.column_names:
            parsed = pd.to_datetime(table[name].to_pandas(), errors="coerce")
            index = table.column_names.index(name)
            table = table.set_column(index, name, pa.Array.from_pandas(parsed))
    if "onset" in table.column_names:
        onset = table["onset"]
        if not (pa.types.is_integer(onset.type) or pa.types.is_floating(onset.type)):
            return None
        seconds = pa.compute.divide(pa.compute.cast(onset, pa.float64()), 1000.0)
        table = table.append_column("onset_sec", seconds)
    return _nulls_typed(pa, table)


def _nulls_typed(pa: Any, table: Any) -> Any:
    """A column without a value has the null type, as the exact path gives it."""
    for index, column in enumerate(table.columns):
        if column.null_count == len(column) and not pa.types.is_null(column.type):
            table = table.set_column(index, table.field(index).name, pa.nulls(len(column)))
    return table


def _to_arrow(pa: Any, frame: pd.DataFrame) -> tuple[Any, set[str]]:
    """One frame as an Arrow table; object columns holding objects, lists or mixed types
    become JSON text (returned as the second value)."""
    arrays, names, json_columns = [], [], set()
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object:
            array, is_json = _object_array(pa, column)
            if is_json:
                json_columns.add(str(name))
        else:
            array = pa.Array.from_pandas(column)
        if array.null_count == len(array):
            array = pa.nulls(len(array))
        arrays.append(array)
        names.append(str(name))
    return pa.Table.from_arrays(arrays, names=names), json_columns


def _object_array(pa: Any, column: pd.Series[Any]) -> tuple[Any, bool]:
    values = column.tolist()
    kinds = {type(v) for v in values if v is not None and not _is_nan(v)}
    if kinds <= {str} or kinds <= {bool}:
        clean = [None if v is None or _is_nan(v) else v for v in values]
        return pa.array(clean, type=pa.bool_() if kinds == {bool} else pa.string()), False
    return _json_array(pa, values), True


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and value != value


def _json_array(pa: Any, values: list[Any]) -> Any:
    return pa.array(
        [None if v is None or _is_nan(v) else orjson.dumps(v).decode() for v in values],
        type=pa.string(),
    )


def _unified(pa: Any, spool: _Spool) -> Any:
    """One schema for every batch: types widened where they differ, a column holding JSON text
    in any batch is JSON text in all, `onset_sec` last as `load()` puts it."""
    json_columns = spool.json_columns
    fields = []
    order = [n for n in spool.order if n != "onset_sec"] + [
        n for n in spool.order if n == "onset_sec"
    ]
    for name in order:
        if name in json_columns:
            fields.append(pa.field(name, pa.string()))
            continue
        types = [s.field(name).type for s in spool.schemas if name in s.names]
        try:
            unified = pa.unify_schemas(
                [pa.schema([(name, t)]) for t in types], promote_options="permissive"
            )
            fields.append(unified.field(name))
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            json_columns.add(name)
            fields.append(pa.field(name, pa.string()))
    metadata = {JSON_COLUMNS_KEY: json.dumps(sorted(json_columns)).encode()}
    return pa.schema(fields, metadata=metadata)


def _conformed(pa: Any, table: Any, schema: Any, json_here: set[str]) -> Any:
    json_columns = set(json.loads(schema.metadata[JSON_COLUMNS_KEY]))
    arrays = []
    for target in schema:
        if target.name not in table.schema.names:
            arrays.append(pa.nulls(len(table), target.type))
            continue
        array = table.column(target.name)
        if target.name in json_columns and target.name not in json_here:
            array = _json_array(pa, array.to_pylist())
        arrays.append(array.cast(target.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _write(pa: Any, spool: _Spool, schema: Any, path: Path, fmt: str) -> int:
    rows = 0
    if fmt == "parquet":
        writer: Any = pa.parquet.ParquetWriter(str(path), schema)
    else:
        writer = pa.csv.CSVWriter(str(path), schema)
    with writer:
        for spooled, json_here in zip(spool.paths, spool.json_in, strict=True):
            with pa.memory_map(str(spooled)) as source:
                table = pa.ipc.open_file(source).read_all()
            conformed = _conformed(pa, table, schema, json_here)
            writer.write_table(conformed)
            rows += len(conformed)
            del table, conformed
            spooled.unlink()
    return rows
