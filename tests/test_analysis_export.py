"""`export` writes each data type as Parquet or CSV that reads back as `load()` gives it."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import archive_folder, cli_options

from hyperstudy_bulk import load
from hyperstudy_bulk.analysis.export import JSON_COLUMNS_KEY, export_archive
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.manifest import FileEntry, Manifest, StreamEntry, load_manifest
from hyperstudy_bulk.simulator import SimulatorConfig, serve

CONFIG = SimulatorConfig(seed=12, rooms=3, participants=2, records=80)
TIMES = ("timestamp", "startTime", "endTime", "createdAt", "updatedAt")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    out = tmp_path_factory.mktemp("export")

    async def run() -> Path:
        async with serve(CONFIG) as sim:
            argv = ["download", sim.experiment_ids[0], "--out", str(out), "--no-media"]
            assert await asyncio.to_thread(main, [*argv, *cli_options(sim)]) == 0
            return archive_folder(out, sim.experiment_ids[0])

    return asyncio.run(run())


def _json_columns(path: Path) -> list[str]:
    metadata = pq.read_schema(path).metadata
    columns: list[str] = json.loads(metadata[JSON_COLUMNS_KEY])
    return columns


def _comparable(frame: pd.DataFrame, json_columns: Sequence[str] = ()) -> pd.DataFrame:
    """`json_columns` decoded; a missing value is None whether it was an absent key or a null
    (a column of a file cannot tell them apart)."""
    frame = frame.copy()
    for name in json_columns:
        frame[name] = frame[name].map(lambda v: orjson.loads(v) if isinstance(v, str) else None)
    for name in frame.columns:
        if frame[name].dtype == object:
            frame[name] = frame[name].map(lambda v: None if v is None or v != v else v)
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    return _comparable(pq.read_table(path).to_pandas(), _json_columns(path))


def _read_csv(path: Path, json_columns: list[str]) -> pd.DataFrame:
    frame = pd.read_csv(path)
    for name in TIMES:
        if name in frame.columns:
            frame[name] = pd.to_datetime(frame[name])
    return _comparable(frame, json_columns)


def test_parquet_and_csv_read_back_as_load(archive: Path, tmp_path: Path) -> None:
    assert main(["export", str(archive)]) == 0
    parquet_dir = archive.parent / f"{archive.name}-export"
    assert main(["export", str(archive), "--format", "csv", "--to", str(tmp_path / "csv")]) == 0
    names = load_manifest(archive).data_types
    assert sorted(p.name for p in parquet_dir.iterdir()) == sorted(f"{n}.parquet" for n in names)
    for name in names:
        expected = load(archive, name)
        parquet = parquet_dir / f"{name}.parquet"
        json_columns = _json_columns(parquet)
        pd.testing.assert_frame_equal(_read_parquet(parquet), _comparable(expected))
        csv = _read_csv(tmp_path / "csv" / f"{name}.csv", json_columns)
        pd.testing.assert_frame_equal(csv, _comparable(expected))
    assert "response" in _json_columns(parquet_dir / "events.parquet")
    assert main(["verify", str(archive)]) == 0


def _handmade_archive(folder: Path, records: list[dict[str, Any]], files: int = 1) -> Path:
    """An archive of one events stream in `files` parts, as download would write it."""
    stream = StreamEntry(
        "events/experiment/x", "events", "experiment", "x", None, {}, status="complete"
    )
    size = -(-len(records) // files)
    for part in range(files):
        chunk = records[part * size : (part + 1) * size]
        data = b"".join(orjson.dumps(r) + b"\n" for r in chunk)
        path = folder / "events" / f"experiment-{part + 1:05d}.ndjson"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entry = FileEntry(str(path.relative_to(folder)), len(chunk), len(data), "")
        entry.sha256 = hashlib.sha256(data).hexdigest()
        stream.files.append(entry)
    stream.records = len(records)
    now = "2026-01-01T00:00:00.000Z"
    manifest = Manifest("x", "http://127.0.0.1", now, "experiment", 1000, ["events"], now, now)
    manifest.streams, manifest.complete = [stream], True
    manifest.save(folder)
    return folder


def test_a_field_first_seen_after_ten_thousand_records_lands_in_one_schema(
    tmp_path: Path,
) -> None:
    records = []
    for i in range(12_000):
        record: dict[str, Any] = {
            "id": f"e{i}",
            "timestamp": f"2026-01-01T00:{i // 6000:02d}:{i % 60:02d}.{i % 1000:03d}Z",
            "onset": i,
            "count": i if i < 5000 else None,
            "flip": "text" if i < 4096 else i,
        }
        if i >= 10_500:
            record["late"] = i % 7
            record["lateNested"] = {"k": [i, "x"]}
            record["mixed"] = "text" if i % 2 else i
        records.append(record)
    folder = _handmade_archive(tmp_path / "archive", records)
    expected = load(folder, "events")
    assert list(expected.columns)[-4:] == ["late", "lateNested", "mixed", "onset_sec"]
    for fmt in ("parquet", "csv"):
        written = export_archive(folder, fmt=fmt, to=tmp_path / fmt, batch_rows=4096)
        assert [(w.data_type, w.rows) for w in written] == [("events", 12_000)]
    parquet = tmp_path / "parquet" / "events.parquet"
    assert pq.ParquetFile(parquet).metadata.num_row_groups == 3
    json_columns = _json_columns(parquet)
    assert json_columns == ["flip", "lateNested", "mixed"]
    pd.testing.assert_frame_equal(_read_parquet(parquet), _comparable(expected))
    csv = _read_csv(tmp_path / "csv" / "events.csv", json_columns)
    # CSV cannot tell 5 from "5": the mixed column's JSON text keeps that difference.
    pd.testing.assert_frame_equal(csv, _comparable(expected))


def test_incomplete_data_and_bad_destinations_are_one_line_errors(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(archive), "--to", str(archive / "inside")]) == 2
    assert "is inside the archive" in capsys.readouterr().err
    assert not (archive / "inside").exists()
    assert main(["export", str(tmp_path)]) == 2
    assert "is not an archive" in capsys.readouterr().err
    assert main(["export", str(archive), "--data-types", "gaze", "--to", str(tmp_path)]) == 2
    assert "holds no data type 'gaze'" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(archive, copy)
    manifest = load_manifest(copy)
    manifest.streams[0].status = "incomplete"
    manifest.save(copy)
    out = tmp_path / "out"
    assert main(["export", str(copy), "--to", str(out)]) == 1
    message = capsys.readouterr().err
    assert f"{manifest.streams[0].data_type} in {copy} is incomplete" in message
    assert message.count("\n") == 1
    assert not out.exists()
    assert main(["export", str(copy), "--to", str(out), "--allow-incomplete"]) == 0


def test_without_pyarrow_export_names_the_install_command(
    archive: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["export", str(archive), "--to", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert error == (
        "hyperstudy-bulk: export needs pyarrow: pip install 'hyperstudy-bulk[parquet]'\n"
    )
    assert not (tmp_path / "x").exists()


def test_text_that_looks_like_a_time_stays_text_as_in_load(tmp_path: Path) -> None:
    records = [
        {"id": f"e{i}", "timestamp": "2026-01-01T00:00:00.000Z", "seenAt": "2026-01-02", "onset": i}
        for i in range(50)
    ]
    folder = _handmade_archive(tmp_path / "archive", records)
    export_archive(folder, to=tmp_path / "out")
    parquet = tmp_path / "out" / "events.parquet"
    assert str(pq.read_schema(parquet).field("seenAt").type) in {"string", "large_string"}
    pd.testing.assert_frame_equal(_read_parquet(parquet), _comparable(load(folder, "events")))


def _varied(i: int) -> dict[str, Any]:
    """A record whose values change type and shape as the stream goes on."""
    record: dict[str, Any] = {
        "id": f"e{i}",
        "timestamp": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        "onset": i,
        "amount": i if i < 700 else i + 0.5,
        "note": None if i < 900 else f"n{i}",
        "flag": i % 3 == 0,
    }
    if i % 5 == 0:
        record["response"] = {"value": i, "label": "é" * (i % 4)} if i % 2 else {}
    if i % 7 == 0:
        record["tags"] = [i, i + 1]
    if i % 11 == 0:
        record["updatedAt"] = "2026-02-30T00:00:00.000Z" if i % 2 else "2026-01-02T03:04:05.6Z"
    if i >= 1500:
        record["late"] = {"b": 1, "a": [2.25]} if i % 2 else {"a": [], "c": "two"}
    return record


def _flattened(i: int) -> dict[str, Any]:
    """A record whose `metadata` and `sparseRatingData` the SDK flattens into columns, with keys
    that come and go."""
    metadata: dict[str, Any] | None = {"question": f"q{i % 3}", "index": i}
    if i % 4 == 1:
        metadata = None
    elif i > 600:
        metadata = {"extra": {"deep": [i]}, **(metadata or {})}
    return {**_varied(i), "metadata": metadata, "sparseRatingData": {"videoId": "v", "t": i / 2}}


@pytest.mark.parametrize(
    "records",
    [
        pytest.param([_varied(i) for i in range(2_000)], id="types-widen-nested-late"),
        pytest.param(
            [{**_varied(i), "tags": "text" if i > 1200 else [i]} for i in range(2_000)],
            id="nested-then-text",
        ),
        pytest.param(
            [{**_varied(i), "tags": [i, "x", {"k": None}]} for i in range(2_000)],
            id="mixed-list",
        ),
        pytest.param([_flattened(i) for i in range(2_000)], id="flattened-fields"),
        pytest.param(
            [{**_flattened(i), "metadata_question": "own"} for i in range(2_000)],
            id="flattened-field-clashes-with-a-key",
        ),
        pytest.param(
            [
                {**_varied(i), "timestamp": "2026-01-01T00:00:00Z" if i % 9 else None}
                for i in range(2_000)
            ],
            id="times-without-fraction",
        ),
    ],
)
def test_export_parsed_in_small_blocks_reads_back_as_load(
    tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    folder = _handmade_archive(tmp_path / "archive", records)
    expected = load(folder, "events")
    for fmt in ("parquet", "csv"):
        export_archive(folder, fmt=fmt, to=tmp_path / fmt, batch_rows=300, block_bytes=8192)
    parquet = tmp_path / "parquet" / "events.parquet"
    json_columns = _json_columns(parquet)
    assert {"response", "tags"} <= set(json_columns)
    pd.testing.assert_frame_equal(_read_parquet(parquet), _comparable(expected))
    csv = _read_csv(tmp_path / "csv" / "events.csv", json_columns)
    pd.testing.assert_frame_equal(csv, _comparable(expected))


def test_text_then_nested_values_in_another_file_become_json_throughout(tmp_path: Path) -> None:
    records = [
        {**_varied(i), "amount": 1, "note": "n", "tags": "text" if i < 700 else [i]}
        for i in range(1_400)
    ]
    folder = _handmade_archive(tmp_path / "archive", records, files=2)
    export_archive(folder, to=tmp_path / "out")
    parquet = tmp_path / "out" / "events.parquet"
    assert "tags" in _json_columns(parquet)
    pd.testing.assert_frame_equal(_read_parquet(parquet), _comparable(load(folder, "events")))


def test_times_of_two_shapes_in_one_column_parse_as_in_load(tmp_path: Path) -> None:
    """pandas parses every value in the first value's format: a time without a fraction of a
    second, after times with one, becomes NaT in load(), and so in the export."""
    records = [
        {
            **_varied(i),
            "timestamp": "2026-01-01T00:00:00Z" if i % 9 == 4 else "2026-01-01T00:00:00.5Z",
        }
        for i in range(200)
    ]
    folder = _handmade_archive(tmp_path / "archive", records)
    expected = load(folder, "events")
    assert expected["timestamp"].isna().sum() == 22
    export_archive(folder, to=tmp_path / "out")
    parquet = tmp_path / "out" / "events.parquet"
    pd.testing.assert_frame_equal(_read_parquet(parquet), _comparable(expected))
