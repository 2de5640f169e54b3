"""Running the simulator: on the current loop, on a background thread, or (see process.py) in
a child process. All three hand back the same kind of handle."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from aiohttp import web

from hyperstudy_bulk.simulator.app import Clock, Simulator, Sleep, build_app
from hyperstudy_bulk.simulator.config import SimulatorConfig
from hyperstudy_bulk.simulator.dataset import Dataset
from hyperstudy_bulk.simulator.faults import FaultSpec

T = TypeVar("T")


def _direct(fn: Callable[[], T]) -> T:
    return fn()


@dataclass(frozen=True)
class SimulatorHandle:
    """What a test or benchmark needs from a running simulator."""

    base_url: str
    api_key: str
    dataset: Dataset
    experiment_ids: list[str]
    _sim: Simulator
    _call: Callable[[Callable[[], Any]], Any] = _direct

    @property
    def origin(self) -> str:
        """scheme://host:port, where the admin and media routes live."""
        return self.dataset.origin

    def stats(self) -> dict[str, Any]:
        """Snapshot of the counters (same JSON as GET /_sim/stats)."""
        result: dict[str, Any] = self._call(self._sim.stats.snapshot)
        return result

    def set_faults(self, spec: FaultSpec) -> None:
        self._call(lambda: self._sim.set_faults(spec))

    def reset(self) -> None:
        """Zero counters and rate-limit state (POST /_sim/reset); mutations stay."""
        self._call(self._sim.reset)

    def mutate(
        self,
        experiment_id: str,
        data_type: str,
        *,
        append: int = 0,
        insert: int = 0,
        room_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Add records while clients crawl (see Dataset.mutate); returns the added records."""
        added: list[dict[str, Any]] = self._call(
            lambda: self._sim.mutate(
                experiment_id, data_type, append=append, insert=insert, room_id=room_id
            )
        )
        return added


def _bind(host: str, port: int) -> socket.socket:
    """Bind before building the app, so the dataset knows its origin even for port 0."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(512)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def serve(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
) -> AsyncIterator[SimulatorHandle]:
    """Serve on the running loop until the block exits; clock (unix seconds) and sleep are
    injectable so tests can drive rate-limit windows, URL expiry and delays without waiting."""
    config = config or SimulatorConfig()
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    origin = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    options: dict[str, Any] = {}
    if clock is not None:
        options["clock"] = clock
    if sleep is not None:
        options["sleep"] = sleep
    sim = Simulator(config, origin=origin, **options)
    runner = web.AppRunner(
        build_app(sim), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield SimulatorHandle(
            base_url=origin + "/api/v3",
            api_key=sim.api_key,
            dataset=sim.dataset,
            experiment_ids=sim.dataset.experiment_ids,
            _sim=sim,
        )
    finally:
        await runner.cleanup()
        sock.close()


@contextmanager
def serve_in_thread(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Clock | None = None,
) -> Iterator[SimulatorHandle]:
    """Serve on a private loop in a daemon thread, for blocking clients such as the SDK.
    The handle's methods run on the server's loop, so they are safe to call from any thread."""
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[tuple[SimulatorHandle, asyncio.Event]] = (
        concurrent.futures.Future()
    )

    async def main() -> None:
        stop = asyncio.Event()
        try:
            async with serve(config, host, port, clock=clock) as handle:
                started.set_result((handle, stop))
                await stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    def call(fn: Callable[[], T]) -> T:
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(fn())
            except Exception as exc:
                result.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return result.result(timeout=30)

    thread = threading.Thread(
        target=loop.run_until_complete, args=(main(),), name="hyperstudy-simulator", daemon=True
    )
    thread.start()
    try:
        handle, _ = started.result(timeout=60)
        yield replace(handle, _call=call)
    finally:
        if started.done() and started.exception() is None:
            loop.call_soon_threadsafe(started.result()[1].set)
        thread.join(timeout=30)
        loop.close()
