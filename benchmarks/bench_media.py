"""Media: recording files downloaded 8 at a time against one at a time, same files, same run.

Run by hand: `python benchmarks/bench_media.py [--quick]`.

The simulator (its own process) answers every request, media included, after 40 ms, and serves
each media response at a capped per-connection rate, like one stream from a storage host; so a
single transfer is latency- and stream-bound and only concurrency fills the link. The CLI runs
as a child (`--data-types recordings`), three times into fresh folders: `--no-media` (listing
only, to net out start-up and the listing), `--media-concurrency 1` (the sequential streaming
baseline), and `--media-concurrency 8` (the default). Every file must equal the simulator's
bytes; peak RSS of each child comes from wait4 and should not grow with the files' size.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import _common as common
from _common import MB, ChildRun

from hyperstudy_bulk.simulator import ProcessHandle, SimulatorConfig, serve_in_subprocess
from hyperstudy_bulk.simulator.dataset import Dataset

TARGET = 4.0


def download(sim: ProcessHandle, out: Path, *extra: str) -> ChildRun:
    experiment = sim.experiment_ids[0]
    args = common.unlimited_download(experiment, out, "--data-types", "recordings", *extra)
    run = common.run_child(common.cli_command(args), common.sim_env(sim))
    common.check_ok(" ".join(extra), run)
    return run


def check_files(config: SimulatorConfig, sim: ProcessHandle, out: Path) -> tuple[int, int]:
    """(files, bytes) of the archive's media, each checked against the simulator's bytes."""
    dataset = Dataset(config)
    folder = next(out.iterdir())
    files = total = 0
    for entry in common.load_manifest(folder)["media"]:
        room, recording = entry["room_id"], entry["recording_id"]
        size = dataset.media_size(room, recording)
        want = hashlib.sha256(dataset.media_bytes(room, recording, 0, size)).hexdigest()
        got = hashlib.sha256((folder / entry["path"]).read_bytes()).hexdigest()
        if got != want or entry["status"] != "complete":
            raise SystemExit(f"media file {entry['path']} differs from the simulator's")
        files += 1
        total += size
    return files, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--latency-ms", type=float, default=40.0)
    parser.add_argument("--mbps", type=float, default=8.0, help="per-connection MB/s")
    options = parser.parse_args()
    config = SimulatorConfig(
        seed=5,
        rooms=3 if options.quick else 12,
        participants=3,
        records=20,
        latency_ms=options.latency_ms,
        media_bytes=400_000 if options.quick else 1_500_000,
        media_mbps=options.mbps,
    )
    with serve_in_subprocess(config) as sim, tempfile.TemporaryDirectory() as tmp:
        base = download(sim, Path(tmp, "none"), "--no-media")
        sequential = download(sim, Path(tmp, "seq"), "--media-concurrency", "1")
        concurrent = download(sim, Path(tmp, "conc"), "--media-concurrency", "8")
        files, total = check_files(config, sim, Path(tmp, "seq"))
        if check_files(config, sim, Path(tmp, "conc")) != (files, total):
            raise SystemExit("the two runs archived different media")
    net_seq = sequential.seconds - base.seconds
    net_conc = concurrent.seconds - base.seconds
    ratio = net_seq / net_conc
    common.print_block(
        "media",
        [
            ("files", f"{files} files, {total / MB:.1f} MB, all identical to the simulator's"),
            ("server", f"{options.latency_ms:g} ms to first byte, {options.mbps:g} MB/s per file"),
            ("listing only", f"{base.seconds:.2f} s (--no-media: start-up and listing)"),
            ("sequential", f"{sequential.seconds:.2f} s, net {net_seq:.2f} s"),
            ("concurrent 8", f"{concurrent.seconds:.2f} s, net {net_conc:.2f} s"),
            ("speed-up", f"{ratio:.1f}x net, {sequential.seconds / concurrent.seconds:.1f}x wall"),
            ("throughput", f"{total / MB / net_conc:.1f} MB/s concurrent"),
            (
                "peak RSS",
                f"sequential {sequential.max_rss_mb:.0f} MB, concurrent "
                f"{concurrent.max_rss_mb:.0f} MB, listing only {base.max_rss_mb:.0f} MB",
            ),
            ("target", f">= {TARGET:g}x net: {'met' if ratio >= TARGET else 'NOT met'}"),
        ],
    )


if __name__ == "__main__":
    main()
