"""The package installs what it imports and nothing else; the demo leaves nothing for git."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from hyperstudy_bulk.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
IMPORT_NAMES = {"python-dotenv": "dotenv"}
"""Distributions whose module is called otherwise."""


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]


def _imported(folder: Path, module: str) -> bool:
    pattern = re.compile(rf"^\s*(import|from) {re.escape(module)}\b", re.M)
    return any(pattern.search(path.read_text()) for path in folder.rglob("*.py"))


def test_every_runtime_dependency_is_imported_by_the_package() -> None:
    for requirement in _project()["dependencies"]:
        name = _name(requirement)
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        assert _imported(ROOT / "src", module), f"{name} is a dependency the package never imports"


def test_aiolimiter_is_only_the_benchmark_baseline() -> None:
    extras = _project()["optional-dependencies"]
    assert "aiolimiter" not in map(_name, _project()["dependencies"])
    assert "aiolimiter" in map(_name, extras["bench"])
    assert not _imported(ROOT / "src", "aiolimiter")
    assert _imported(ROOT / "benchmarks", "aiolimiter")


def test_the_demo_folder_is_ignored_by_git() -> None:
    demo_out = build_parser().parse_args(["demo"]).out
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert f"/{demo_out}/" in ignored
