"""An --out whose file system refuses locks (ENOLCK, as NFS without its lock daemon): the
shards read a plan written before them with `plan --shards N`, each takes 1/N of the key's
limits, and they still make the one archive; a plain download goes on unlocked and says so."""

from __future__ import annotations

import asyncio
import errno
import fcntl
from pathlib import Path

import pytest
from conftest import DATA_TYPE_PATHS, archive_folder, cli_options, expected_type, read_type

from hyperstudy_bulk.cli import main
from hyperstudy_bulk.config import load_settings
from hyperstudy_bulk.datatypes import data_type_named
from hyperstudy_bulk.ledger import SharedBudget, shared_budget
from hyperstudy_bulk.simulator import SimulatorConfig, serve

SCALE = 60.0
CONFIG = SimulatorConfig(
    seed=8, rooms=3, participants=2, records=40, rate_limit=SCALE, rate_window="sliding"
)


def refuse_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    def flock(descriptor: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)


async def test_shards_without_locks_plan_ahead_take_an_even_share_and_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refuse_locks(monkeypatch)
    async with serve(CONFIG) as sim:
        exp = sim.experiment_ids[0]
        out = tmp_path / "out"
        options = ["--api-key", sim.api_key, "--base-url", sim.base_url, "--out", str(out)]
        options += ["--page-size", "10", "--rate-limit-time-scale", str(SCALE)]
        shard = ["download", exp, "--no-media", "--progress", "none", *options, "--shard"]

        # Nothing can elect the one shard that surveys: the message says what to run first.
        assert await asyncio.to_thread(main, [*shard, "1/2"]) == 2
        err = capsys.readouterr().err
        assert f"hyperstudy-bulk plan {exp} --out {out} --shards 2" in err
        assert err.strip().splitlines()[-1].count("no file locks") == 1
        assert sim.stats()["total"] == 0

        assert await asyncio.to_thread(main, ["plan", exp, *options, "--shards", "2"]) == 0
        printed = capsys.readouterr().out
        assert "shard 1/2: " in printed
        assert "shard 2/2: " in printed
        surveyed = sim.stats()["total"]

        codes = await asyncio.gather(
            *(asyncio.to_thread(main, [*shard, k]) for k in ("1/2", "2/2"))
        )
        assert codes == [0, 0]
        err = capsys.readouterr().err
        assert err.count("each of the 2 shards takes 1/2 of the key's limits") == 2
        assert err.count("read the plan another shard (or `plan --shards`) made") == 2
        assert err.count("make sure no other run writes shard part") == 2
        stats = sim.stats()
        assert stats["by_status"].get("429", 0) == 0
        assert stats["total"] > surveyed  # the shards did not survey again

        folder = archive_folder(out, exp)
        assert main(["merge", str(folder)]) == 0
        assert "make sure no other run writes the archive" in capsys.readouterr().err
        assert main(["verify", str(folder)]) == 0
        for path in DATA_TYPE_PATHS:
            name = data_type_named(path).folder
            assert sorted(map(repr, read_type(folder, name))) == sorted(
                map(repr, expected_type(sim, path, exp))
            ), path


async def test_a_ledger_losing_its_locks_mid_run_leaves_each_shard_its_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = {"rate_limit_per_hour": 4, "rate_limit_per_minute_per_endpoint": 100}
    settings = load_settings(
        {"api_key": "hst_test_k", "out": str(tmp_path), "rate_limit_time_scale": 60, **limits},
        environ={},
    )
    messages: list[str] = []
    budget = shared_budget(settings, log=messages.append, shards=2)
    assert isinstance(budget, SharedBudget)
    async with budget.slot("data/events"):  # admitted through the shared file
        pass
    refuse_locks(monkeypatch)
    async with budget.slot("data/events"):  # the file fails: from now on 2 of the 4 an hour
        pass
    assert len(messages) == 1
    assert "the shared request ledger failed" in messages[0]
    assert messages[0].endswith("each of the 2 shards takes 1/2 of the key's limits")
    # Its own two requests fill its share of the hour: a third waits (the key's 4 would not).
    assert budget.ledger.try_admit("data/chat") > 0


async def test_a_download_without_locks_goes_on_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refuse_locks(monkeypatch)
    async with serve(SimulatorConfig(seed=4, rooms=1, participants=1, records=10)) as sim:
        exp = sim.experiment_ids[0]
        args = ["download", exp, *cli_options(sim), "--no-media", "--out", str(tmp_path)]
        assert await asyncio.to_thread(main, args) == 0
        err = capsys.readouterr().err
        assert "the file system has no file locks (No locks available): make sure no other" in err
        assert main(["verify", str(archive_folder(tmp_path, exp))]) == 0
