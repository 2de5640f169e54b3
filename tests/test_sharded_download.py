"""Shards of one job: started at once against one key, they agree on one plan, stay within the
key's limits together, and `merge` makes the one archive every other command reads. Also
`download --all` over a paged experiments listing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from conftest import (
    DATA_TYPE_PATHS,
    archive_folder,
    cli_options,
    expected_type,
    manifest_of,
    read_type,
)

from hyperstudy_bulk.cli import main
from hyperstudy_bulk.cli_shards import resolve_shard
from hyperstudy_bulk.datatypes import data_type_named
from hyperstudy_bulk.manifest import MANIFEST_NAME, load_manifest
from hyperstudy_bulk.plan import Shard
from hyperstudy_bulk.simulator import SimulatorConfig, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle

SCALE = 60.0  # the hour lasts 60 s, the minute 1 s: 100 requests per endpoint per second
UNEVEN = SimulatorConfig(
    seed=5, rooms=6, participants=2, records=40, rate_limit=SCALE, rate_window="sliding"
)
"""Eye-tracking and continuous ratings hold most records: at experiment granularity one
stream would outweigh a third of the job."""


@pytest.fixture
def uneven_sim() -> Iterator[SimulatorHandle]:
    with serve_in_thread(UNEVEN) as handle:
        yield handle


def shard_command(sim: SimulatorHandle, out: Path, shard: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hyperstudy_bulk",
        "download",
        sim.experiment_ids[0],
        *("--out", str(out), "--shard", shard, "--page-size", "10"),
        *("--no-media", "--progress", "none", "--rate-limit-time-scale", str(SCALE)),
    ]


def assert_exact(sim: SimulatorHandle, folder: Path) -> None:
    exp = sim.experiment_ids[0]
    for path in DATA_TYPE_PATHS:
        got = sorted(map(repr, read_type(folder, data_type_named(path).folder)))
        assert got == sorted(map(repr, expected_type(sim, path, exp))), path


def test_three_shards_at_once_share_one_plan_and_the_key_and_merge_into_the_archive(
    uneven_sim: SimulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = uneven_sim
    out = tmp_path / "out"
    env = {**os.environ, "HYPERSTUDY_API_KEY": sim.api_key, "HYPERSTUDY_BASE_URL": sim.base_url}
    shards = [
        subprocess.Popen(
            shard_command(sim, out, f"{k}/3"), env=env, stderr=subprocess.PIPE, text=True
        )
        for k in (1, 2, 3)
    ]
    logs = [process.communicate(timeout=240)[1] for process in shards]
    assert [process.returncode for process in shards] == [0, 0, 0], logs
    stats = sim.stats()
    assert stats["by_status"].get("429", 0) == 0
    # Each endpoint's minute allows 100: the three together needed several minutes' worth.
    assert max(stats["requests"].get(route, {}).get("200", 0) for route in stats["requests"]) > 200
    # One survey: the 1-record probes of the data types were made once, not three times.
    assert sum("surveyed" in log for log in logs) == 1
    assert sum("read the plan another shard" in log for log in logs) == 2
    assert all("shard " in log and "planned requests" in log for log in logs)

    folder = archive_folder(out, sim.experiment_ids[0])
    plan = orjson.loads((folder / ".shards" / "plan.json").read_bytes())
    # Uneven data still splits evenly by planned requests: finer streams (one per room).
    assert plan["granularity"] == "room"
    assert any("granularity room instead of experiment" in log for log in logs)
    loads = Counter[int]()
    for stream in plan["streams"]:
        loads[stream["shard"]] += stream["requests"]
    assert max(loads.values()) <= 1.1 * min(loads.values()), loads
    # No two shards wrote the same file.
    owned = [
        {
            f.path
            for s in load_manifest(folder, f".shards/part-{k}-of-3.json").streams
            for f in s.files
        }
        for k in (1, 2, 3)
    ]
    assert sum(map(len, owned)) == len(set.union(*owned))

    assert main(["merge", str(folder)]) == 0
    merged = (folder / MANIFEST_NAME).read_bytes()
    assert main(["merge", str(folder)]) == 0
    assert (folder / MANIFEST_NAME).read_bytes() == merged
    assert main(["verify", str(folder)]) == 0
    assert_exact(sim, folder)

    capsys.readouterr()
    before = sim.stats()["total"]
    plain = [*cli_options(sim), "--page-size", "10", "--no-media", "--rate-limit-time-scale", "60"]
    assert main(["download", sim.experiment_ids[0], "--out", str(out), *plain]) == 0
    assert "nothing changed" in capsys.readouterr().err
    assert sim.stats()["total"] - before == sum(  # one total per time-ordered data type
        1 for path in DATA_TYPE_PATHS if data_type_named(path).time_filtered
    )


def test_merge_names_a_missing_or_unfinished_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = SimulatorConfig(seed=2, rooms=2, participants=1, records=30)
    with serve_in_thread(config) as sim:
        out = tmp_path / "out"
        options = [*cli_options(sim), "--no-media", "--out", str(out)]
        exp = sim.experiment_ids[0]
        assert main(["download", exp, "--shard", "1/2", *options]) == 0
        folder = archive_folder(out, exp)
        capsys.readouterr()
        assert main(["merge", str(folder)]) == 1
        err = capsys.readouterr().err
        assert "shard 2/2 has not written its part" in err
        assert len(err.strip().splitlines()) == 1
        assert not (folder / MANIFEST_NAME).exists()
        # Another number of shards would mix a second snapshot into the same folder.
        assert main(["download", exp, "--shard", "2/3", *options]) == 2
        assert "is being archived by 2 shards" in capsys.readouterr().err

        assert main(["download", exp, "--shard", "2/2", *options]) == 0
        part = folder / ".shards" / "part-2-of-2.json"
        document = orjson.loads(part.read_bytes())
        document["complete"] = False
        document["streams"][0]["status"] = "incomplete"
        part.write_bytes(orjson.dumps(document))
        capsys.readouterr()
        assert main(["merge", str(folder)]) == 1
        assert "shard 2/2 is not complete (1 stream(s) unfinished" in capsys.readouterr().err

        assert main(["download", exp, "--shard", "2/2", *options]) == 0
        assert main(["merge", str(folder)]) == 0
        assert main(["verify", str(folder)]) == 0


@pytest.mark.parametrize("shard", ["0/3", "4/3", "a/b", "3"])
def test_a_bad_shard_is_one_line_and_exit_2(
    shard: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["download", "exp", "--shard", shard, "--api-key", "k", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--shard" in err
    assert list(tmp_path.iterdir()) == []


def test_slurm_array_tasks_become_shards_and_a_single_task_is_the_whole_job() -> None:
    array = {"SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert resolve_shard(None, {**array, "SLURM_ARRAY_TASK_ID": "2"}) == (
        Shard(3, 4),
        "SLURM array task 2",
    )
    assert resolve_shard("1/2", {**array, "SLURM_ARRAY_TASK_ID": "2"}) == (Shard(1, 2), "--shard")
    single = {
        "SLURM_ARRAY_TASK_ID": "1",
        "SLURM_ARRAY_TASK_MIN": "1",
        "SLURM_ARRAY_TASK_COUNT": "1",
    }
    assert resolve_shard(None, single) == (None, "SLURM array task 1")
    assert resolve_shard(None, {}) == (None, "")


MANY = SimulatorConfig(seed=3, experiments=3, rooms=1, participants=1, records=3, max_page_size=2)
"""Pages of at most 2: the experiments listing takes two pages."""


def test_download_all_archives_every_experiment_of_the_key(tmp_path: Path) -> None:
    with serve_in_thread(MANY) as sim:
        out = tmp_path / "all"
        assert main(["download", "--all", *cli_options(sim), "--no-media", "--out", str(out)]) == 0
        for exp in sim.experiment_ids:
            assert main(["verify", str(archive_folder(out, exp))]) == 0
        listing = sim.stats()["requests"]
        assert listing["GET /experiments"] == {"200": 2}


def test_download_all_in_shards_splits_experiments_and_streams_together(tmp_path: Path) -> None:
    with serve_in_thread(MANY) as sim:
        out = tmp_path / "all"
        options = [*cli_options(sim), "--no-media", "--out", str(out)]
        for shard in ("2/2", "1/2"):
            assert main(["download", "--all", "--shard", shard, *options]) == 0
        for exp in sim.experiment_ids:
            folder = archive_folder(out, exp)
            assert main(["merge", str(folder)]) == 0
            assert main(["verify", str(folder)]) == 0
            assert read_type(folder, "events") == expected_type(sim, "events", exp)


def test_experiment_ids_and_all_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", "exp", "--all", "--api-key", "k"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["download", "--api-key", "k"]) == 2
    assert "or pass --all" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["exp", "--out", "x"], "plan --out comes with --shards N"),
        (["--all"], "plan --all comes with --shards N"),
        ([], "name at least one EXPERIMENT_ID to plan"),
        (["exp", "--shards", "1"], "--shards takes a number of shards, 2 or more"),
    ],
)
def test_plan_writes_only_with_shards(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", *args, "--api-key", "k"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_shards_fetch_their_own_media_later_and_update_is_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = SimulatorConfig(seed=6, rooms=3, participants=1, records=20, media_bytes=3_000)
    with serve_in_thread(config) as sim:
        exp = sim.experiment_ids[0]
        out, alone = tmp_path / "out", tmp_path / "alone"
        options = [*cli_options(sim), "--out", str(out)]
        for k in (1, 2):
            assert main(["download", exp, "--shard", f"{k}/2", "--no-media", *options]) == 0
        folder = archive_folder(out, exp)
        records = sim.stats()["requests"]

        for k in (1, 2):
            assert main(["download", exp, "--shard", f"{k}/2", "--media-only", *options]) == 0
        requests = sim.stats()["requests"]
        fetched = {route for route in requests if requests[route] != records.get(route)}
        media_routes = {"GET /data/recordings/download/{roomId}/{recordingId}"}
        media_routes.add("GET /media/{roomId}/{recordingId}")
        assert fetched == media_routes  # no page of records again
        # Each shard fetched the files its own recordings name, into its own part.
        parts = [load_manifest(folder, f".shards/part-{k}-of-2.json").media for k in (1, 2)]
        first, second = ({m.path for m in part} for part in parts)
        assert first.isdisjoint(second)
        assert main(["merge", str(folder)]) == 0
        assert main(["verify", str(folder)]) == 0
        assert main(["download", exp, *cli_options(sim), "--out", str(alone)]) == 0
        media = {(m.path, m.status, m.sha256) for m in load_manifest(folder).media}
        assert media == {(m.path, m.status, m.sha256) for m in manifest_of(alone, exp).media}
        assert {path for path, _, _ in media} == first | second
        assert any(status == "complete" for _, status, _ in media)

        capsys.readouterr()
        assert main(["download", str(folder), "--update", "--shard", "1/2", *options]) == 2
        err = capsys.readouterr().err
        assert "--update runs as one process: drop --shard" in err
        assert len(err.strip().splitlines()) == 1
        # One process updates the merged archive; the parts are history then.
        assert main(["download", str(folder), "--update", *cli_options(sim)]) == 0
        updated = (folder / MANIFEST_NAME).read_bytes()
        capsys.readouterr()
        assert main(["merge", str(folder)]) == 1
        assert "was updated after the shards' snapshot" in capsys.readouterr().err
        assert (folder / MANIFEST_NAME).read_bytes() == updated
