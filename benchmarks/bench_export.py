"""Export and load: an archive to Parquet against DuckDB and naive pandas, and load() against
pandas.read_json.

Run by hand: `python benchmarks/bench_export.py [--quick]` (DuckDB comes with the bench extra:
`pip install -e '.[test,bench]'`).

The simulator's experiment is archived at 1x and 8x (about 145,000 and 1.3M records); each
contender then runs in its own child process, side by side in one run, its wall and CPU seconds
and peak RSS from wait4:

- `hyperstudy-bulk export DIR --format parquet` (all data types);
- DuckDB: per data type `COPY (SELECT * FROM read_json_auto('<type>/*.ndjson')) TO
  '<type>.parquet'` (its default threads);
- naive pandas: per data type `pandas.read_json(file, lines=True)` for each file, concatenated,
  `.to_parquet()`.

Then `load()` of the largest data type against `pandas.read_json(lines=True)` of the same files.
Targets: export >= half DuckDB's records per second and faster than naive pandas; export's
peak RSS flat from 1x to 8x (<= 1.25x + 30 MB) and under 400 MB; load() at least as fast as
read_json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import (
    ChildRun,
    archive_records,
    check_ok,
    cli_command,
    load_manifest,
    print_block,
    run_child,
    sim_env,
    unlimited_download,
)

from hyperstudy_bulk.simulator import SimulatorConfig, serve_in_subprocess

RSS_TARGET_MB = 400.0

DUCKDB = """
import sys, duckdb
folder, out, *types = sys.argv[1:]
con = duckdb.connect()
for name in types:
    con.execute(
        f"COPY (SELECT * FROM read_json_auto('{folder}/{name}/**/*.ndjson')) "
        f"TO '{out}/{name}.parquet' (FORMAT PARQUET)"
    )
"""

NAIVE_PANDAS = """
import sys, orjson, pandas as pd
from pathlib import Path
folder, out, *types = sys.argv[1:]
manifest = orjson.loads((Path(folder) / "manifest.json").read_bytes())
Path(out).mkdir(parents=True, exist_ok=True)
for name in types:
    files = [f["path"] for s in manifest["streams"] if s["data_type"] == name for f in s["files"]]
    frames = [pd.read_json(Path(folder) / f, lines=True) for f in files]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    frame.to_parquet(Path(out) / f"{name}.parquet")
"""

LOAD = """
import sys, time
from hyperstudy_bulk import load
started = time.perf_counter()
frame = load(sys.argv[1], sys.argv[2])
print(len(frame), time.perf_counter() - started)
"""

READ_JSON = """
import sys, time, orjson, pandas as pd
from pathlib import Path
folder, name = sys.argv[1:]
manifest = orjson.loads((Path(folder) / "manifest.json").read_bytes())
files = [f["path"] for s in manifest["streams"] if s["data_type"] == name for f in s["files"]]
started = time.perf_counter()
frame = pd.concat([pd.read_json(Path(folder) / f, lines=True) for f in files], ignore_index=True)
print(len(frame), time.perf_counter() - started)
"""


def python_child(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def archive(config: SimulatorConfig, out: Path) -> Path:
    with serve_in_subprocess(config) as sim:
        args = unlimited_download(sim.experiment_ids[0], out, "--no-media", "--page-size", "5000")
        check_ok(f"download into {out}", run_child(cli_command(args), sim_env(sim)))
        return out / sim.experiment_ids[0]


def timed(code: str, *args: str) -> tuple[int, float]:
    """(rows, seconds) a child prints: the time of the reading alone, without its imports."""
    done = subprocess.run(python_child(code, *args), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-2000:]}")
    rows, seconds = done.stdout.split()
    return int(rows), float(seconds)


def run(config: SimulatorConfig, factors: tuple[int, int]) -> None:
    rows: list[tuple[str, str]] = []
    exports: dict[int, ChildRun] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        folders = {}
        for factor in factors:
            sized = SimulatorConfig(
                seed=config.seed,
                rooms=config.rooms * factor,
                participants=config.participants,
                records=config.records,
            )
            folders[factor] = archive(sized, root / f"x{factor}")
        for factor, folder in folders.items():
            exports[factor] = run_child(
                cli_command(["export", str(folder), "--to", str(root / f"export-{factor}")]),
                os.environ,
            )
            check_ok(f"export x{factor}", exports[factor])
        big = folders[factors[1]]
        records = archive_records(big)
        types = load_manifest(big)["data_types"]
        (root / "duck").mkdir()
        duck = run_child(python_child(DUCKDB, str(big), str(root / "duck"), *types), os.environ)
        check_ok("duckdb", duck)
        naive = run_child(
            python_child(NAIVE_PANDAS, str(big), str(root / "naive"), *types), os.environ
        )
        check_ok("naive pandas", naive)
        ours = exports[factors[1]]
        small = exports[factors[0]]
        for label, child in (("export", ours), ("duckdb", duck), ("naive pandas", naive)):
            rows.append(
                (
                    f"{factors[1]}x {label}",
                    f"{records / child.seconds:,.0f} records/s (wall {child.seconds:.1f} s, "
                    f"CPU {child.cpu_seconds:.1f} s, peak RSS {child.max_rss_mb:.0f} MB)",
                )
            )
        rows += [
            ("export / duckdb", f"{duck.seconds / ours.seconds:.2f}x its records/s (>= 0.5)"),
            ("export / naive pandas", f"{naive.seconds / ours.seconds:.2f}x its records/s (> 1)"),
            (
                "export peak RSS 1x -> 8x",
                f"{small.max_rss_mb:.0f} MB -> {ours.max_rss_mb:.0f} MB "
                f"(limit {small.max_rss_mb * 1.25 + 30:.0f}, and < {RSS_TARGET_MB:.0f})",
            ),
        ]
        totals: dict[str, int] = {}
        for stream in load_manifest(big)["streams"]:
            totals[stream["data_type"]] = totals.get(stream["data_type"], 0) + stream["records"]
        largest = max(totals, key=lambda name: totals[name])
        n_load, t_load = timed(LOAD, str(big), largest)
        n_json, t_json = timed(READ_JSON, str(big), largest)
        rows += [
            (f"load({largest!r})", f"{n_load:,} rows in {t_load:.2f} s"),
            (f"pandas.read_json({largest!r})", f"{n_json:,} rows in {t_json:.2f} s"),
            ("load / read_json", f"{t_json / t_load:.2f}x as fast (>= 1)"),
        ]
    print_block(f"bench_export ({records:,} records at {factors[1]}x)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    config = SimulatorConfig(seed=3, rooms=4, participants=3, records=100 if args.quick else 1000)
    run(config, (1, 8))


if __name__ == "__main__":
    main()
