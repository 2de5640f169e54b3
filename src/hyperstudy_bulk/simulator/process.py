"""The simulator in a child process, so a benchmark measures the client, not a shared core."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hyperstudy_bulk.simulator.cli import READY_LINE, to_argv
from hyperstudy_bulk.simulator.config import SimulatorConfig


@dataclass(frozen=True)
class ProcessHandle:
    """base_url, api_key and experiment_ids as printed by the child; counters over HTTP."""

    base_url: str
    api_key: str
    experiment_ids: list[str]
    process: subprocess.Popen[str]

    @property
    def origin(self) -> str:
        return self.base_url.removesuffix("/api/v3")

    def _admin(self, method: str, path: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(self.origin + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("GET", "/_sim/stats")
        return result

    def reset(self) -> None:
        self._admin("POST", "/_sim/reset")

    def set_faults(self, spec: str) -> None:
        self._admin("POST", "/_sim/faults", spec.encode())

    def mutate(
        self,
        experiment_id: str,
        data_type: str,
        *,
        append: int = 0,
        insert: int = 0,
        room_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """POST /_sim/mutate (see Dataset.mutate); returns the added records."""
        body = {
            "experimentId": experiment_id,
            "dataType": data_type,
            "append": append,
            "insert": insert,
            "roomId": room_id,
        }
        reply = self._admin("POST", "/_sim/mutate", json.dumps(body).encode())
        added: list[dict[str, Any]] = reply["added"]
        return added


@contextmanager
def serve_in_subprocess(
    config: SimulatorConfig | Sequence[str] | None = None, *, timeout: float = 60.0
) -> Iterator[ProcessHandle]:
    """Start `python -m hyperstudy_bulk.simulator --port 0 ...`, parse what it prints, and
    terminate it on exit. `config` may be a SimulatorConfig or CLI arguments."""
    if config is None:
        config = SimulatorConfig()
    argv = to_argv(config) if isinstance(config, SimulatorConfig) else list(config)
    command = [sys.executable, "-m", "hyperstudy_bulk.simulator", *argv, "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, encoding="utf-8")
    try:
        assert process.stdout is not None
        values: dict[str, str] = {}
        experiments: list[str] = []
        for line in process.stdout:
            line = line.rstrip("\n")
            if line == READY_LINE:
                break
            if line.startswith("# experiment "):
                experiments.append(line.split()[2])
            elif "=" in line:
                name, _, value = line.partition("=")
                values[name] = value
        else:
            raise RuntimeError(f"simulator exited early with code {process.wait(timeout)}")
        yield ProcessHandle(
            base_url=values["HYPERSTUDY_BASE_URL"],
            api_key=values["HYPERSTUDY_API_KEY"],
            experiment_ids=experiments,
            process=process,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
