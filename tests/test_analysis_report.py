"""`report` writes one self-contained, valid HTML page with a figure per section."""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import archive_folder, cli_options

from hyperstudy_bulk.cli import main
from hyperstudy_bulk.manifest import load_manifest
from hyperstudy_bulk.simulator import SimulatorConfig, serve

CONFIG = SimulatorConfig(seed=21, rooms=3, participants=2, records=60, media_bytes=2000)
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "wbr"}
SECTIONS = ["state", "timeline", "participants", "media"]


class _Page(HTMLParser):
    """Checks nesting (every element closed, in order) and collects what the page refers to."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.errors: list[str] = []
        self.doctype = False
        self.sections: dict[str, list[bytes]] = {}
        self.current: str | None = None
        self.references: list[str] = []
        self.tags: set[str] = set()
        self.empty_cells = 0

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = dict(attrs)
        for name in ("src", "href", "action", "data"):
            if values.get(name):
                self.references.append(str(values[name]))
        if tag == "section":
            self.current = str(values["id"])
            self.sections[self.current] = []
        if tag == "img" and self.current is not None:
            prefix = "data:image/png;base64,"
            source = str(values["src"])
            assert source.startswith(prefix)
            self.sections[self.current].append(base64.b64decode(source[len(prefix) :]))
        if tag == "td" and values.get("class") == "empty":
            self.empty_cells += 1
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:]}")
            return
        self.open.pop()
        if tag == "section":
            self.current = None


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")

    async def run() -> Path:
        async with serve(CONFIG) as sim:
            argv = ["download", sim.experiment_ids[0], "--out", str(out)]
            assert await asyncio.to_thread(main, [*argv, *cli_options(sim)]) == 0
            return archive_folder(out, sim.experiment_ids[0])

    return asyncio.run(run())


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_report_is_valid_self_contained_html_with_a_figure_per_section(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(archive)]) == 0
    path = archive.parent / f"{archive.name}-report.html"
    assert capsys.readouterr().out == f"report written to {path}\n"
    page = _parse(path)
    assert page.doctype
    assert page.errors == []
    assert page.open == []
    assert list(page.sections) == SECTIONS
    for name, images in page.sections.items():
        assert len(images) == 1, name
        assert images[0].startswith(b"\x89PNG\r\n\x1a\n"), name
    assert all(ref.startswith("data:image/png;base64,") for ref in page.references)
    assert not {"script", "link", "iframe", "object"} & page.tags
    assert not re.search(r"https?://|url\(", path.read_text())
    assert main(["verify", str(archive)]) == 0


def test_report_shows_records_media_and_state(archive: Path, tmp_path: Path) -> None:
    target = tmp_path / "r" / "report.html"
    assert main(["report", str(archive), "--to", str(target)]) == 0
    text = target.read_text()
    manifest = load_manifest(archive)
    assert "The archive is complete." in text
    for stream in manifest.streams:
        assert f"<td>{stream.data_type}</td>" in text
    rooms = {entry.room_id for entry in manifest.media}
    assert rooms
    media_table = text.split('id="media"')[1]
    for room in rooms:
        files = sum(1 for e in manifest.media if e.room_id == room)
        assert f"<td>{room}</td><td>{files:,}</td>" in media_table
    # With 2 participants per room and 3 rooms, some participant lacks eye-tracking or chat in
    # the simulator's data: those cells stand out.
    assert _parse(target).empty_cells > 0


def test_report_of_an_incomplete_archive_says_so(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(archive, copy)
    manifest = load_manifest(copy)
    manifest.complete = False
    manifest.streams[0].status = "incomplete"
    manifest.save(copy)
    assert main(["report", str(copy)]) == 0
    text = (tmp_path / "copy-report.html").read_text()
    assert "The archive is NOT complete." in text
    assert "1 incomplete" in text
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "is not an archive" in capsys.readouterr().err
