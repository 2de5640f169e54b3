"""`hyperstudy-bulk export`: each data type of an archive as one Parquet or CSV file, in bounded
memory, with the columns `load()` gives.

Batches in, row groups out: the NDJSON is read 2 MiB at a time and converted to `load()`'s
columns, by pyarrow's JSON reader and Arrow compute where that gives what pandas would (see
`_tables`), else by the same conversion as frames.py. Two data types are exported at once
(`WORKERS`): the reader, the casts and the Parquet writer run without the GIL. Each batch is
written straight into the Parquet file while it keeps the first batch's schema. A field that
first appears late, or whose type widens (an integer column that later holds a missing value),
changes the schema: from that batch on (and for CSV, from the start) batches are spooled to
uncompressed Arrow IPC files beside the output, the file written so far becomes the spool's
first part, and once the data type is read the schemas are unified (`pyarrow.unify_schemas`,
permissive) and every batch, cast to that one schema (absent columns as nulls), becomes a row
group of the Parquet file or rows of the CSV. Memory holds a block and its batch per data type
in flight, whatever the archive's size.

Nested values that are not flattened (`response`, `config`, `recipientIds`, the objects behind
`metadata_*` columns, ...) and columns whose values mix types are written as JSON text,
losslessly; the file's schema metadata lists those columns under `hyperstudy_bulk.json_columns`
(a JSON array) so a reader can decode them.
"""

from __future__ import annotations

import functools
import json
import operator
import shutil
import struct
import tempfile
import threading
from array import array as typed_array
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from hyperstudy_bulk.analysis.records import (
    TIMESTAMP_COLUMNS,
    Record,
    flatten,
    flatten_targets,
)
from hyperstudy_bulk.archive import Archive, ArchiveError, block_lines, read_blocks, read_lines
from hyperstudy_bulk.datatypes import DataType, Scope
from hyperstudy_bulk.manifest import StreamEntry

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("parquet", "csv")
JSON_COLUMNS_KEY = b"hyperstudy_bulk.json_columns"
BATCH_ROWS = 25_000
BLOCK_BYTES = 1 << 21
"""NDJSON parsed at once by the fast path (see `_tables`); each block is one row group (or a few,
of BATCH_ROWS). 2 MiB rather than 4: the same CPU, about 50 MB less peak memory with two data
types in flight."""
WORKERS = 2
"""Data types exported at once: pyarrow parses and writes without the GIL, so one data type's
C++ work overlaps another's Python (the exact path), on two cores or more."""
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
    block_bytes: int = BLOCK_BYTES,
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
    stop = threading.Event()

    def export(kind: DataType) -> Exported:
        target = destination / f"{kind.folder}.{fmt}"
        batches = _tables(pa, archive, kind, batch_rows, block_bytes, allow_incomplete)
        rows = _export_type(pa, batches, kind, target, fmt, stop)
        return Exported(kind.folder, target, rows)

    largest_first = sorted(kinds, key=lambda kind: -_archived_bytes(archive, kind))
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="export") as pool:
        running = {kind: pool.submit(export, kind) for kind in largest_first}
        try:
            written = []
            for kind in kinds:
                written.append(running[kind].result())
                on_done(written[-1])
        except BaseException:
            stop.set()  # the others stop at their next batch, leaving no file
            pool.shutdown(cancel_futures=True)
            raise
    return written


def _archived_bytes(archive: Archive, kind: DataType) -> int:
    return sum(listed.entry.bytes for s in archive.streams(kind) for listed in archive.files(s))


class _Stopped(Exception):
    """Another data type's export failed: this one stops too."""


@dataclass
class _Columns:
    """What the batches seen so far say of a data type's columns."""

    schemas: list[Any] = field(default_factory=list)
    json_in: list[set[str]] = field(default_factory=list)
    order: dict[str, None] = field(default_factory=dict)

    @property
    def json_columns(self) -> set[str]:
        return set().union(*self.json_in)

    def note(self, schema: Any, json_columns: set[str]) -> None:
        self.schemas.append(schema)
        self.json_in.append(json_columns)
        self.order.update(dict.fromkeys(schema.names))


@dataclass
class _Spool:
    """Batches set aside until their one schema is known: each part an Arrow IPC file of one
    batch, or a Parquet file of batches of one schema."""

    folder: Path
    paths: list[Path] = field(default_factory=list)
    columns: _Columns = field(default_factory=_Columns)

    def note(self, path: Path, schema: Any, json_columns: set[str]) -> None:
        self.paths.append(path)
        self.columns.note(schema, json_columns)

    def add(self, pa: Any, table: Any, json_columns: set[str]) -> None:
        path = self.folder / f"{len(self.paths):06d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        self.note(path, table.schema, json_columns)

    def parts(self, pa: Any) -> Iterator[tuple[Any, set[str]]]:
        """The spooled batches in order, each part's file deleted once read."""
        for path, json_here in zip(self.paths, self.columns.json_in, strict=True):
            if path.suffix == ".parquet":
                parquet = pa.parquet.ParquetFile(str(path))
                for group in range(parquet.num_row_groups):
                    yield parquet.read_row_group(group), json_here
            else:
                with pa.memory_map(str(path)) as source:
                    yield pa.ipc.open_file(source).read_all(), json_here
            path.unlink()


class _Direct:
    """Writes batches straight into the Parquet file while they keep the first batch's schema
    (the usual case: no spool, one pass over the data). The first batch that would change the
    schema ends it: the file written so far becomes the spool's first part."""

    def __init__(self, pa: Any, path: Path) -> None:
        self.pa = pa
        self.path = path
        self.schema: Any = None
        self.json_columns: set[str] = set()
        self.writer: Any = None
        self.rows = 0

    def takes(self, table: Any, json_here: set[str]) -> bool:
        pa = self.pa
        if self.writer is None:
            first = _Columns()
            first.note(table.schema, json_here)
            self.schema = _unified(pa, first)
            self.json_columns = json_here
        elif not self._fits(table, json_here):
            return False
        conformed = _conformed(pa, table, self.schema, json_here)
        if self.writer is None:
            self.writer = _writer(pa, self.path, self.schema, "parquet", conformed)
        self.writer.write_table(conformed)
        self.rows += len(conformed)
        return True

    def _fits(self, table: Any, json_here: set[str]) -> bool:
        """Whether the schema of every batch so far and this one is still the first one."""
        pa = self.pa
        for column in table.schema:
            if column.name not in self.schema.names:
                return False
            if pa.types.is_null(column.type):
                continue
            if column.name in json_here and column.name not in self.json_columns:
                return False
            ours = self.schema.field(column.name).type
            if column.type != ours and not _widens_to(pa, column.type, ours):
                return False
        return True

    def hand_over(self, spool: _Spool) -> None:
        if self.writer is not None:
            self.writer.close()
            part = spool.folder / "000000.parquet"
            self.path.replace(part)
            spool.note(part, self.schema, self.json_columns)

    def finish(self) -> int:
        if self.writer is None:
            self.schema = _unified(self.pa, _Columns())
            self.writer = _writer(self.pa, self.path, self.schema, "parquet", None)
        self.writer.close()
        return self.rows


def _widens_to(pa: Any, type_: Any, wider: Any) -> bool:
    try:
        unified = pa.unify_schemas(
            [pa.schema([("c", type_)]), pa.schema([("c", wider)])], promote_options="permissive"
        )
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return False
    return bool(unified.field("c").type == wider)


def _export_type(
    pa: Any,
    batches: Iterator[tuple[Any, set[str]]],
    kind: DataType,
    target: Path,
    fmt: str,
    stop: threading.Event,
) -> int:
    spool = _Spool(Path(tempfile.mkdtemp(prefix=f".{kind.folder}.", dir=target.parent)))
    partial = target.with_name(f".{target.name}.part")
    direct = _Direct(pa, partial) if fmt == "parquet" else None
    try:
        for table, json_columns in batches:
            if stop.is_set():
                raise _Stopped
            if direct is not None and direct.takes(table, json_columns):
                continue
            if direct is not None:
                direct.hand_over(spool)
                direct = None
            spool.add(pa, table, json_columns)
        if direct is not None:
            rows = direct.finish()
        else:
            rows = _write(pa, spool, _unified(pa, spool.columns), partial, fmt)
        partial.replace(target)
        return rows
    except BaseException:
        if direct is not None and direct.writer is not None:
            direct.writer.close()
        partial.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(spool.folder, ignore_errors=True)


def _tables(
    pa: Any,
    archive: Archive,
    kind: DataType,
    batch_rows: int,
    block_bytes: int,
    allow_incomplete: bool,
) -> Iterator[tuple[Any, set[str]]]:
    """The data type as Arrow tables holding `load()`'s columns, with their JSON columns.

    Fast path, for an experiment-scope data type: pyarrow's JSON reader parses a block at a
    time (C++, without the GIL; see `_Columnar`); nested values become JSON text and the SDK's
    flattened columns are made from the decoded fields (`_load_columns`). The first block the
    reader cannot give `load()`'s columns for (a type that changes, text it takes for a time, a
    timestamp that is not text) sends the rest of the data type down the exact path: decoded
    records -> the SDK's DataFrame -> Arrow. Records of finer streams are merged in time order
    by the exact path. Both give the same columns and values; the schema unification makes
    their types agree."""
    streams = archive.streams(kind)
    first = _first_record(archive, streams)
    if first is None or any(s.scope != Scope.EXPERIMENT for s in streams):
        from hyperstudy_bulk.analysis.frames import iter_frames

        frames = iter_frames(
            archive.folder, kind.folder, rows=batch_rows, allow_incomplete=allow_incomplete
        )
        for frame in frames:
            yield _to_arrow(pa, frame)
        return
    targets = flatten_targets(first)
    columnar = _Columnar(pa, targets)
    for stream in streams:
        for listed in archive.files(stream):
            for block in read_blocks(listed.path, chunk_bytes=block_bytes):
                converted = columnar.read(block)
                if converted is not None:
                    table, json_columns = converted
                    for start in range(0, table.num_rows, batch_rows):
                        yield table.slice(start, batch_rows), json_columns
                    continue
                yield from _exact_tables(pa, block_lines(block), targets, batch_rows)


def _exact_tables(
    pa: Any, lines: list[bytes], targets: tuple[str, ...], batch_rows: int
) -> Iterator[tuple[Any, set[str]]]:
    """The lines as the SDK's DataFrames, as Arrow tables. pandas is imported here, only when
    needed: it is a third of export's start-up."""
    from hyperstudy_bulk.analysis.frames import sdk_frame

    for start in range(0, len(lines), batch_rows):
        records = list(map(orjson.loads, lines[start : start + batch_rows]))
        frame = sdk_frame(flatten(records, targets))
        if len(frame.columns):
            yield _to_arrow(pa, frame)


def _first_record(archive: Archive, streams: list[StreamEntry]) -> Record | None:
    for stream in streams:
        for listed in archive.files(stream):
            for lines in read_lines(listed.path, chunk_bytes=1 << 16):
                first: Record = orjson.loads(lines[0])
                return first
    return None


ISO_UTC = r"^[1-9]\d{3}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{1,6}Z$"
"""Text that `pandas.to_datetime` parses, whatever the column's other values of this shape, to
the microsecond in UTC, as Arrow's cast does (a date that does not exist fails the cast)."""


class _Columnar:
    """Blocks of NDJSON lines as tables of `load()`'s columns, by pyarrow's JSON reader, until
    a block needs the exact path (then, and for every later block, `read` gives None).

    Each block's column types are given to the reader for the next block: parsing against
    known types takes about half the time of inferring them. A block whose values do not fit
    them (the reader refuses it) is read again with inference, so the types are the ones
    inference gives."""

    def __init__(self, pa: Any, targets: tuple[str, ...]) -> None:
        self.pa = pa
        self.targets = targets
        self.known: Any = None
        self.exact = False

    def read(self, block: bytes) -> tuple[Any, set[str]] | None:
        if self.exact:
            return None
        table = self._parsed(block)
        converted = None if table is None else _load_columns(self.pa, table, block, self.targets)
        self.exact = converted is None
        return converted

    def _parsed(self, block: bytes) -> Any:
        pa = self.pa
        if self.known is not None:
            try:
                options = pa.json.ParseOptions(explicit_schema=self.known)
                table = pa.json.read_json(
                    pa.py_buffer(block), read_options=_whole(pa, block), parse_options=options
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                table = None
            if table is not None:
                self._learn(table)
                return table
        try:
            table = pa.json.read_json(pa.py_buffer(block), read_options=_whole(pa, block))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        self._learn(table)
        return table

    def _learn(self, table: Any) -> None:
        pa = self.pa
        self.known = pa.schema(
            [f for f in table.schema if not (pa.types.is_null(f.type) or _temporal(pa, f.type))]
        )


def _whole(pa: Any, block: bytes) -> Any:
    """The block parsed in one piece on this thread: splitting it across pyarrow's threads
    costs about 40% more CPU, and export already runs data types in parallel."""
    return pa.json.ReadOptions(use_threads=False, block_size=len(block) + 1)


def _temporal(pa: Any, type_: Any) -> bool:
    return bool(pa.types.is_temporal(type_))


def _load_columns(
    pa: Any, table: Any, block: bytes, targets: tuple[str, ...]
) -> tuple[Any, set[str]] | None:
    """The reader's table as `load()`'s columns, with the names of those holding JSON text; or
    None when only the exact path can say what pandas would make of it.

    A column the reader typed as a struct or list held nothing but objects or lists (and
    nulls): pandas keeps those as Python objects, which export writes as JSON text, so their
    values are taken from the decoded lines. `targets` are the fields flattened into
    `<field>_<key>` columns (see `_flattened`). Text the reader took for a time (pandas keeps it
    as text) and a timestamp column that is not text go the exact way."""
    if "onset_sec" in table.column_names or not table.num_columns:
        return None
    for column in table.schema:
        if _temporal(pa, column.type):
            return None
        if column.name in TIMESTAMP_COLUMNS and not (
            pa.types.is_string(column.type) or pa.types.is_null(column.type)
        ):
            return None
    nested = tuple(f.name for f in table.schema if pa.types.is_nested(f.type))
    values: dict[str, list[Any]] = {}
    if nested:
        rows = _fields_decoder(nested).decode_lines(block)
        if len(rows) != table.num_rows:
            return None
        for position, name in enumerate(nested):
            values[name] = list(map(operator.attrgetter(f"f{position}"), rows))
    json_columns = set(nested)
    flat: list[tuple[str, Any]] = []
    if targets:
        flattened = _flattened(pa, table, values, targets)
        if flattened is None:
            return None
        flat, json_flat = flattened
        json_columns |= json_flat
    for name in nested:
        index = table.column_names.index(name)
        table = table.set_column(index, name, _json_array(pa, values[name]))
    first = orjson.loads(block[: block.find(b"\n")] if b"\n" in block else block) if flat else {}
    # pandas puts the flattened columns after the first record's keys, and later ones after them
    keys_after_first = set(table.column_names) - set(first)
    for name, array in flat:
        table = table.append_column(name, array)
    if flat and keys_after_first:
        order = _pandas_order(block, targets)
        if set(order) != set(table.column_names):
            return None
        table = table.select(order)
    for name in TIMESTAMP_COLUMNS:
        if name in table.column_names and pa.types.is_string(table.schema.field(name).type):
            index = table.column_names.index(name)
            table = table.set_column(index, name, _times(pa, table[name]))
    if "onset" in table.column_names:
        onset = table["onset"]
        if not (pa.types.is_integer(onset.type) or pa.types.is_floating(onset.type)):
            return None
        seconds = pa.compute.divide(pa.compute.cast(onset, pa.float64()), _float(pa, 1000.0))
        table = table.append_column("onset_sec", seconds)
    return _nulls_typed(pa, table), json_columns


def _pandas_order(block: bytes, targets: tuple[str, ...]) -> list[str]:
    """The columns of the block's flattened records in pandas' order (first appearance)."""
    order: dict[str, None] = {}
    for line in block_lines(block):
        record = orjson.loads(line)
        order.update(dict.fromkeys(record))
        for target in targets:
            value = record.get(target)
            if isinstance(value, dict):
                order.update(dict.fromkeys(f"{target}_{key}" for key in value))
    return list(order)


def _flattened(
    pa: Any, table: Any, values: dict[str, list[Any]], targets: tuple[str, ...]
) -> tuple[list[tuple[str, Any]], set[str]] | None:
    """The SDK's `<field>_<key>` columns of `targets` (frames.flatten), in the order pandas
    gives them when no record has a top-level key the first lacks: after the record's own
    keys, in order of first appearance. Their values are the reader's struct fields, or JSON
    text of the decoded objects for a key holding objects or lists; None when one would clash
    with a record's own key, or a value is text the reader took for a time."""
    order: dict[str, tuple[str, str]] = {}
    objects = [values.get(target, ()) for target in targets]
    for row in zip(*objects, strict=True):
        for target, value in zip(targets, row, strict=True):
            if isinstance(value, dict):
                for key in value:
                    order.setdefault(f"{target}_{key}", (target, key))
    if any(name in table.column_names for name in order):
        return None
    fields = {
        target: dict(
            zip(
                [f.name for f in table.schema.field(target).type],
                table[target].flatten(),
                strict=True,
            )
        )
        for target in targets
        if target in values and pa.types.is_struct(table.schema.field(target).type)
    }
    flat, json_columns = [], set()
    for name, (target, key) in order.items():
        child = fields[target][key]
        if _temporal(pa, child.type):
            return None
        if pa.types.is_nested(child.type):
            objects_here = values[target]
            child = _json_array(
                pa, [v.get(key) if isinstance(v, dict) else None for v in objects_here]
            )
            json_columns.add(name)
        flat.append((name, child))
    return flat, json_columns


@functools.lru_cache(maxsize=64)
def _fields_decoder(names: tuple[str, ...]) -> msgspec.json.Decoder[Any]:
    """Decodes only these fields of each line (absent: None), skipping the others' values: a
    third of the time of decoding whole records."""
    fields = [(f"f{i}", Any, None) for i in range(len(names))]
    rename = dict(zip((field for field, _, _ in fields), names, strict=True))
    return msgspec.json.Decoder(msgspec.defstruct("Fields", fields, rename=rename))


def _times(pa: Any, text: Any) -> Any:
    """A text column parsed as `pandas.to_datetime(errors="coerce")` parses it: by Arrow when
    every value is ISO 8601 UTC with a fraction of a second (`ISO_UTC`), else by pandas."""
    if text.null_count < len(text):
        shaped = pa.compute.match_substring_regex(text, ISO_UTC)
        if pa.compute.all(shaped).as_py():
            try:
                return pa.compute.cast(text, pa.timestamp("us", tz="UTC"))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
    import pandas as pd

    return pa.Array.from_pandas(pd.to_datetime(text.to_pandas(), errors="coerce"))


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
    """JSON text of each value (None and NaN: null), built from its buffers: `pa.array` of
    Python values would make pyarrow import pandas (a third of a second), which the fast path
    otherwise never needs."""
    texts = [None if v is None or _is_nan(v) else orjson.dumps(v) for v in values]
    offsets = typed_array("i", accumulate((0 if t is None else len(t) for t in texts), initial=0))
    present = bytes(t is not None for t in texts)
    valid = pa.Array.from_buffers(pa.uint8(), len(texts), [None, pa.py_buffer(present)])
    return pa.StringArray.from_buffers(
        len(texts),
        pa.py_buffer(offsets),
        pa.py_buffer(b"".join(t for t in texts if t is not None)),
        valid.cast(pa.bool_()).buffers()[1],
        texts.count(None),
    )


def _float(pa: Any, value: float) -> Any:
    """An Arrow scalar made without pyarrow's conversion of Python values (see `_json_array`)."""
    return pa.Array.from_buffers(pa.float64(), 1, [None, pa.py_buffer(struct.pack("<d", value))])[0]


def _unified(pa: Any, columns: _Columns) -> Any:
    """One schema for every batch: types widened where they differ, a column holding JSON text
    in any batch is JSON text in all, `onset_sec` last as `load()` puts it."""
    json_columns = columns.json_columns
    fields = []
    order = [n for n in columns.order if n != "onset_sec"] + [
        n for n in columns.order if n == "onset_sec"
    ]
    for name in order:
        if name in json_columns:
            fields.append(pa.field(name, pa.string()))
            continue
        types = [s.field(name).type for s in columns.schemas if name in s.names]
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
    writer: Any = None
    try:
        for table, json_here in spool.parts(pa):
            conformed = _conformed(pa, table, schema, json_here)
            if writer is None:
                writer = _writer(pa, path, schema, fmt, conformed)
            writer.write_table(conformed)
            rows += len(conformed)
            del table, conformed
        if writer is None:
            writer = _writer(pa, path, schema, fmt, None)
    finally:
        if writer is not None:
            writer.close()
    return rows


def _writer(pa: Any, path: Path, schema: Any, fmt: str, first: Any) -> Any:
    """A writer of `schema`; `first`, the first batch (None: there is none), tells which
    columns are worth a dictionary."""
    if fmt == "csv":
        return pa.csv.CSVWriter(str(path), schema)
    repetitive = [] if first is None else _repetitive(pa, first)
    return pa.parquet.ParquetWriter(str(path), schema, use_dictionary=repetitive or False)


def _repetitive(pa: Any, table: Any) -> list[str]:
    """Columns worth a Parquet dictionary, judged by the first batch: few distinct values (ids
    of experiments, rooms, participants; categories). A dictionary for a column of distinct
    values (record ids, times, measurements) is built, found too big and dropped, for nothing:
    that was a third of the time the writer took."""
    return [
        name
        for name in table.column_names
        if not pa.types.is_null(table.schema.field(name).type)
        and pa.compute.count_distinct(table[name]).as_py() * 10 <= len(table)
    ]
