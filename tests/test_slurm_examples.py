"""examples/slurm/ run as a new HPC user runs them: `submit.sh` with fake `sbatch` and
`scontrol` on PATH (they record what they are asked), then each array task started the way
SLURM starts it (all at once, each with its SLURM_ARRAY_* variables, output appended to the
script's --output file), one of them stopped by the time limit's SIGTERM and requeued, then the
dependent merge job. The API key is only ever in the environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DATA_TYPE_PATHS, archive_folder, cli_options, read_type

from hyperstudy_bulk.cli import main
from hyperstudy_bulk.datatypes import data_type_named
from hyperstudy_bulk.manifest import load_manifest
from hyperstudy_bulk.simulator import SimulatorConfig, serve_in_thread
from hyperstudy_bulk.simulator.server import SimulatorHandle

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "slurm"
SCALE = 720.0  # the key's hour lasts 5 s
JOB = SimulatorConfig(
    seed=23,
    rooms=3,
    participants=2,
    records=100,
    media_bytes=4_000,
    rate_limit=SCALE,
    rate_window="sliding",
)
"""At pages of 5 the job needs more than the key's 1,000 requests an hour, so the four tasks
are all still running when their requests reach the hour's limit together."""

FAKE_SBATCH = """#!{python}
import json, os, sys
from pathlib import Path
jobs = Path(os.environ["FAKE_SLURM_JOBS"])
submitted = jobs.read_text().splitlines() if jobs.exists() else []
with jobs.open("a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
print(1001 + len(submitted))
"""
FAKE_SCONTROL = """#!{python}
import json, os, sys
with open(os.environ["FAKE_SLURM_CONTROL"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def job_sim() -> Iterator[SimulatorHandle]:
    with serve_in_thread(JOB) as handle:
        yield handle


def fake_slurm(folder: Path) -> Path:
    """A bin folder with the fake `sbatch` and `scontrol`."""
    folder.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scontrol", FAKE_SCONTROL)):
        (folder / name).write_text(text.format(python=sys.executable))
        (folder / name).chmod(0o755)
    return folder


def recorded(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def directive(script: Path, name: str) -> str:
    found = re.search(rf"^#SBATCH --{name}=(\S+)$", script.read_text(), re.MULTILINE)
    assert found, f"{script.name} has no #SBATCH --{name}"
    return found.group(1)


class Scheduler:
    """Starts batch scripts as SLURM does: in the submission folder, with the submitting
    environment plus the job's SLURM variables, output appended to its --output file."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, env

    def start(
        self, script: Path, args: list[str], log: str, slurm: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with (self.cwd / log).open("a") as output:
            return subprocess.Popen(
                ["bash", str(script), *args],
                cwd=self.cwd,
                env={**self.env, **slurm},
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def start_task(
        self, script: Path, args: list[str], job: int, task: int
    ) -> subprocess.Popen[bytes]:
        first, last = map(int, directive(script, "array").split("-"))
        log = directive(script, "output").replace("%A", str(job)).replace("%a", str(task))
        array = {
            "SLURM_JOB_ID": str(job + 100 + task),
            "SLURM_ARRAY_JOB_ID": str(job),
            "SLURM_ARRAY_TASK_ID": str(task),
            "SLURM_ARRAY_TASK_MIN": str(first),
            "SLURM_ARRAY_TASK_MAX": str(last),
            "SLURM_ARRAY_TASK_COUNT": str(last - first + 1),
        }
        return self.start(script, args, log, array)


def test_the_example_array_job_its_requeue_and_merge_make_one_process_archive(
    job_sim: SimulatorHandle, tmp_path: Path
) -> None:
    sim = job_sim
    experiment = sim.experiment_ids[0]
    bin_dir = fake_slurm(tmp_path / "fake-slurm")
    installed = Path(sys.executable).parent
    assert (installed / "hyperstudy-bulk").exists(), "the package's console script is needed"
    submit_dir = tmp_path / "home"
    submit_dir.mkdir()
    out = tmp_path / "scratch" / "hyperstudy"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{installed}{os.pathsep}{os.environ['PATH']}",
        "HYPERSTUDY_API_KEY": sim.api_key,
        "HYPERSTUDY_BASE_URL": sim.base_url,
        # The job's shape on the simulator's scaled clock (a user sets none of these).
        "HYPERSTUDY_PAGE_SIZE": "5",
        "HYPERSTUDY_RATE_LIMIT_TIME_SCALE": str(SCALE),
        "FAKE_SLURM_JOBS": str(tmp_path / "sbatch.jsonl"),
        "FAKE_SLURM_CONTROL": str(tmp_path / "scontrol.jsonl"),
    }
    for script in EXAMPLES.iterdir():
        assert sim.api_key not in script.read_text()

    submit = subprocess.run(
        [str(EXAMPLES / "submit.sh"), experiment, str(out)],
        cwd=submit_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert submit.returncode == 0, submit.stderr
    array_job, merge_job = recorded(tmp_path / "sbatch.jsonl")
    assert array_job == ["--parsable", str(EXAMPLES / "archive-array.sbatch"), experiment, str(out)]
    assert merge_job == ["--dependency=afterok:1001", str(EXAMPLES / "merge.sbatch"), str(out)]

    scheduler = Scheduler(submit_dir, env)
    array_script = EXAMPLES / "archive-array.sbatch"
    tasks = {k: scheduler.start_task(array_script, array_job[2:], 1001, k) for k in (1, 2, 3, 4)}
    # Together the tasks reach the key's hourly 1,000 before any can finish its share:
    # then the time limit's SIGTERM (--signal=B:TERM) reaches task 2's batch shell.
    while sim.stats()["total"] < 900:
        with pytest.raises(subprocess.TimeoutExpired):
            tasks[2].wait(timeout=0.02)
    tasks[2].terminate()
    codes = {k: task.wait(timeout=240) for k, task in tasks.items()}
    logs = {k: (submit_dir / f"hyperstudy-1001_{k}.log").read_text() for k in tasks}
    assert codes == {1: 0, 2: 143, 3: 0, 4: 0}, logs
    assert recorded(tmp_path / "scontrol.jsonl") == [["requeue", "1001_2"]]

    requeued = scheduler.start_task(array_script, array_job[2:], 1001, 2)
    assert requeued.wait(timeout=240) == 0, (submit_dir / "hyperstudy-1001_2.log").read_text()
    logs[2] = (submit_dir / "hyperstudy-1001_2.log").read_text()
    for k, log in logs.items():
        assert f"shard {k}/4 (from SLURM array task {k})" in log
        assert sim.api_key not in log
    assert sim.stats()["by_status"].get("429", 0) == 0

    merge_script = EXAMPLES / "merge.sbatch"
    merge_log = directive(merge_script, "output").replace("%j", "1002")
    merge = scheduler.start(merge_script, merge_job[2:], merge_log, {"SLURM_JOB_ID": "1002"})
    assert merge.wait(timeout=120) == 0, (submit_dir / merge_log).read_text()

    folder = archive_folder(out, experiment)
    assert main(["verify", str(folder)]) == 0
    alone = tmp_path / "one-process"
    scaled = ["--rate-limit-time-scale", str(SCALE), "--page-size", "100"]
    assert main(["download", experiment, *cli_options(sim), *scaled, "--out", str(alone)]) == 0
    reference = archive_folder(alone, experiment)
    for path in DATA_TYPE_PATHS:
        name = data_type_named(path).folder
        assert sorted(map(repr, read_type(folder, name))) == sorted(
            map(repr, read_type(reference, name))
        ), name
    media = {(m.path, m.status, m.sha256) for m in load_manifest(folder).media}
    assert media == {(m.path, m.status, m.sha256) for m in load_manifest(reference).media}
    assert any(status == "complete" for _, status, _ in media)
