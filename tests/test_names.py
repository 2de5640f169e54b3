"""File names read as the participants' names in any script, stay safe on common file systems,
and an archive named by an earlier version keeps working: the manifest maps each file."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import orjson
import pytest
from conftest import archive_folder, settings_for

from hyperstudy_bulk.api import Downloader
from hyperstudy_bulk.cli import main
from hyperstudy_bulk.manifest import MANIFEST_NAME, load_manifest
from hyperstudy_bulk.media import media_name
from hyperstudy_bulk.runner import experiment_folder
from hyperstudy_bulk.simulator import SimulatorConfig, serve
from hyperstudy_bulk.sinks import legacy_name, safe_name

MEDIA_ROUTE = "GET /media/{roomId}/{recordingId}"


@pytest.mark.parametrize(
    ("participant", "name"),
    [
        ("李雷", "李雷_video_rec1.mp4"),
        ("Ольга Петрова", "Ольга Петрова_video_rec1.mp4"),
        ("محمد", "محمد_video_rec1.mp4"),
        ("Zoë (2nd run)", "Zoë (2nd run)_video_rec1.mp4"),
        ("a/b:c*?", "a%2Fb%3Ac%2A%3F_video_rec1.mp4"),
    ],
)
def test_media_names_keep_the_participants_names(participant: str, name: str) -> None:
    assert media_name({"participantName": participant}, "rec1") == name


def test_a_long_name_is_cut_between_characters_and_gets_a_hash() -> None:
    participant = "Ольга Петрова " * 8
    name = media_name({"participantName": participant}, "rec1")
    who = name.removesuffix("_video_rec1.mp4")
    kept, digest = who.split("~")
    assert participant.startswith(kept)
    assert len(who.encode()) <= 60
    assert len(digest) == 16
    assert media_name({"participantName": participant + "!"}, "rec1") != name


def test_a_cut_never_parts_a_letter_from_its_accent() -> None:
    decorated = "q\u0307" * 80  # q with a dot above has no single code point
    kept = safe_name(decorated, 40).split("~")[0]
    assert kept
    assert not kept.endswith("q")
    assert decorated.startswith(kept)


def test_names_are_nfc_and_a_differently_composed_id_gets_its_own_name() -> None:
    composed, decomposed = "Zoë", unicodedata.normalize("NFD", "Zoë")
    assert safe_name(composed) == "Zoë"
    assert safe_name(decomposed).startswith("Zoë~")
    assert safe_name(decomposed) != safe_name(composed)


@pytest.mark.parametrize(
    ("identifier", "name"),
    [
        (".hidden", "%2Ehidden"),
        ("..", "%2E%2E"),
        ("trailing. ", "trailing.%20"),
        ("CON", "%43ON"),
        ("nul.txt", "%6Eul.txt"),
        ("50%~", "50%25%7E"),
        ("tab\there", "tab%09here"),
        ("\u202eevil", "%E2%80%AEevil"),
    ],
)
def test_what_is_unsafe_on_some_file_system_is_escaped(identifier: str, name: str) -> None:
    assert safe_name(identifier) == name


def test_an_archive_folder_named_by_an_earlier_version_is_found(tmp_path: Path) -> None:
    old = tmp_path / legacy_name("李雷")
    assert old.name == "%E6%9D%8E%E9%9B%B7"
    assert experiment_folder(tmp_path, "李雷") == tmp_path / "李雷"
    old.mkdir()
    assert experiment_folder(tmp_path, "李雷") == old
    assert experiment_folder(tmp_path, "plain") == tmp_path / "plain"


def _rename_every_file(folder: Path) -> None:
    """Give every data and media file of the archive another name, in the manifest too, as an
    archive written by an earlier version's naming rule looks to this one."""
    document = orjson.loads((folder / MANIFEST_NAME).read_bytes())
    for stream in document["streams"]:
        old_stem = stream["stem"]
        stream["stem"] = old_stem.replace("/", "/old-", 1)
        for file in stream["files"]:
            new = file["path"].replace(old_stem, stream["stem"], 1)
            (folder / new).parent.mkdir(parents=True, exist_ok=True)
            (folder / file["path"]).rename(folder / new)
            file["path"] = new
    for media in document["media"]:
        new = media["path"].replace("media/", "media/old-", 1)
        (folder / new).parent.mkdir(parents=True, exist_ok=True)
        (folder / media["path"]).rename(folder / new)
        media["path"] = new
    (folder / MANIFEST_NAME).write_bytes(orjson.dumps(document))


async def test_files_named_otherwise_are_kept_on_resume_and_update(tmp_path: Path) -> None:
    config = SimulatorConfig(seed=1, rooms=3, participants=2, records=20, hostile_ids=True)
    async with serve(config) as sim:
        exp = sim.experiment_ids[0]
        settings = settings_for(sim, tmp_path, granularity="room", data_types="recordings,chat")
        async with Downloader(settings) as downloader:
            assert (await downloader.archive(exp)).complete
        folder = archive_folder(tmp_path, exp)
        _rename_every_file(folder)
        renamed = load_manifest(folder)
        fetched = sim.stats()["requests"][MEDIA_ROUTE]["200"]

        async with Downloader(settings) as downloader:
            assert (await downloader.archive(exp)).complete
            updated = await downloader.archive(exp, update=True)

    assert sim.stats()["requests"][MEDIA_ROUTE]["200"] == fetched
    assert [m.path for m in updated.media] == [m.path for m in renamed.media]
    assert {s.stem for s in updated.streams} == {s.stem for s in renamed.streams}
    assert all("/old-" in f.path for s in updated.streams for f in s.files)
    assert main(["verify", str(folder)]) == 0
