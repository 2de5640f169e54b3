"""Helpers the benchmarks share: running the CLI as a measured child process, reading an
archive back, and the request arithmetic the targets are stated in.

The client always runs in its own process (or, for in-process baselines, against a simulator
in its own process), so the figures are the client's and not the simulator's.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from hyperstudy_bulk.simulator import ProcessHandle

HERE = Path(__file__).resolve().parent
MB = 1e6


@dataclass(frozen=True)
class ChildRun:
    """What one child process cost: wall seconds, CPU seconds (user + sys), peak RSS."""

    returncode: int
    seconds: float
    cpu_seconds: float
    max_rss_mb: float
    stderr: str


def cli_command(args: Sequence[str]) -> list[str]:
    """The `hyperstudy-bulk` command line, as a user runs it."""
    return [sys.executable, "-m", "hyperstudy_bulk", *args]


def unlimited_download(experiment_id: str, out: Path, *extra: str) -> list[str]:
    """`download` arguments with the client's budget lifted (the simulator enforces none) and
    no progress output: what the throughput benchmarks time."""
    unlimited = str(10**9)
    return [
        "download",
        experiment_id,
        "--out",
        str(out),
        "--progress",
        "none",
        "--rate-limit-per-hour",
        unlimited,
        "--rate-limit-per-minute-per-endpoint",
        unlimited,
        *extra,
    ]


def sim_env(sim: ProcessHandle) -> dict[str, str]:
    """The environment a user would set to point the CLI at the simulator."""
    return {
        **os.environ,
        "HYPERSTUDY_API_KEY": sim.api_key,
        "HYPERSTUDY_BASE_URL": sim.base_url,
    }


def run_child(command: Sequence[str], env: Mapping[str, str]) -> ChildRun:
    """Run `command` to completion; its own rusage comes from wait4, not from
    RUSAGE_CHILDREN, so the simulator child (also ours) never leaks into the figures."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command), env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    stderr = process.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    return ChildRun(
        returncode=process.returncode,
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        max_rss_mb=usage.ru_maxrss * 1024 / MB,  # Linux reports KiB
        stderr=stderr,
    )


def check_ok(label: str, run: ChildRun) -> None:
    """Stop the benchmark when a download failed: its timing would mean nothing."""
    if run.returncode != 0:
        raise SystemExit(f"{label}: CLI exited {run.returncode}\n{run.stderr[-2000:]}")


def load_manifest(folder: Path) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads((folder / "manifest.json").read_bytes())
    return document


def read_stream_records(folder: Path, data_type: str) -> list[dict[str, Any]]:
    """Every record of `data_type` in archive order: streams as the manifest lists them, each
    stream's part files in order, lines in order."""
    records: list[dict[str, Any]] = []
    for stream in load_manifest(folder)["streams"]:
        if stream["data_type"] != data_type:
            continue
        for entry in stream["files"]:
            with (folder / entry["path"]).open("rb") as lines:
                records.extend(orjson.loads(line) for line in lines)
    return records


def archive_bytes(folder: Path) -> int:
    """Bytes of NDJSON data in the archive (the manifest excluded)."""
    return sum(
        entry["bytes"] for stream in load_manifest(folder)["streams"] for entry in stream["files"]
    )


def archive_records(folder: Path) -> int:
    return sum(stream["records"] for stream in load_manifest(folder)["streams"])


def minimum_requests(totals: Mapping[str, int], page_size: int) -> int:
    """Fewest requests the data needs: every stream at least one page, then full pages."""
    return sum(max(1, math.ceil(total / page_size)) for total in totals.values())


def experiment_totals(folder: Path) -> dict[str, int]:
    """Records per stream as the server's totals said (from the manifest)."""
    return {s["key"]: int(s["server_total"] or 0) for s in load_manifest(folder)["streams"]}


def print_block(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """The results block every benchmark ends with: aligned `name: value` lines."""
    width = max(len(name) for name, _ in rows)
    print(f"== {title} ==")
    for name, value in rows:
        print(f"{name:<{width}} : {value}")
