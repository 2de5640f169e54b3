"""The README's two commands are the ones that work: CI runs the test command verbatim."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    demo, tests = _readme_commands()
    assert demo.endswith("hyperstudy-bulk demo")
    assert "pip install" in demo
    assert tests.endswith("python -m pytest -q")
    assert "'.[test]'" in tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci
