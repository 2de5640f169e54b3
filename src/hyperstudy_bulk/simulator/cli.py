"""`python -m hyperstudy_bulk.simulator`: serve a simulated API until Ctrl-C or SIGTERM.

Prints, flushed, lines that can be pasted into a .env file::

    HYPERSTUDY_BASE_URL=http://127.0.0.1:8765/api/v3
    HYPERSTUDY_API_KEY=hst_test_...
    # experiment <id> rooms=<n> participants=<n> records=<n>
    # serving; press Ctrl-C to stop
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from hyperstudy_bulk.simulator.config import RateLimit, SimulatorConfig
from hyperstudy_bulk.simulator.dataset import DATA_TYPES, Dataset
from hyperstudy_bulk.simulator.faults import FaultSpec
from hyperstudy_bulk.simulator.server import serve

READY_LINE = "# serving; press Ctrl-C to stop"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _rate_limit(text: str) -> RateLimit:
    if text in ("off", "production"):
        return text  # type: ignore[return-value]
    try:
        scale = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected production, off or a time scale > 0") from None
    if scale <= 0:
        raise argparse.ArgumentTypeError("the time scale must be > 0")
    return scale


def _faults(text: str) -> FaultSpec:
    try:
        return FaultSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hyperstudy-bulk simulate",
        description="Serve a simulated HyperStudy API v3.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8765, metavar="N", help="0 picks a free port")
    p.add_argument(
        "--seed", type=int, default=0, metavar="N", help="the same seed serves the same data"
    )
    p.add_argument("--experiments", type=int, default=1, metavar="N", help="experiments served")
    p.add_argument("--rooms", type=int, default=4, metavar="N", help="rooms per experiment")
    p.add_argument("--participants", type=int, default=3, metavar="N", help="participants per room")
    p.add_argument(
        "--records",
        type=int,
        default=200,
        metavar="N",
        help="mean records per participant per type",
    )
    p.add_argument(
        "--latency-ms", type=float, default=0.0, metavar="MS", help="delay before each response"
    )
    p.add_argument(
        "--jitter-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="random extra delay, up to this, added to --latency-ms",
    )
    p.add_argument(
        "--rate-limit",
        type=_rate_limit,
        default="off",
        metavar="{production,off,SCALE}",
        help="enforce the production limits, none, or production's on a clock SCALE times faster",
    )
    p.add_argument(
        "--rate-window",
        choices=("fixed", "sliding"),
        default="fixed",
        help="how the rate-limit windows move",
    )
    p.add_argument(
        "--faults",
        type=_faults,
        default=FaultSpec.none(),
        metavar="SPEC",
        help="fault probabilities, e.g. 500=0.05,reset=0.01",
    )
    p.add_argument(
        "--max-page-size",
        type=int,
        default=1000,
        metavar="N",
        help="records per page at most, whatever limit a client asks for",
    )
    p.add_argument(
        "--oversize-limit",
        choices=("cap", "reject", "timeout"),
        default="cap",
        help="a larger limit is capped, refused with 400 naming the maximum, or answered 504",
    )
    p.add_argument(
        "--record-us", type=float, default=0.0, metavar="US", help="server time per record"
    )
    p.add_argument(
        "--capacity", type=int, default=0, metavar="N", help="pages worked on at once (0: no limit)"
    )
    p.add_argument(
        "--media-bytes", type=int, default=200_000, metavar="BYTES", help="mean recording size"
    )
    p.add_argument(
        "--media-mbps",
        type=float,
        default=0.0,
        metavar="MB_PER_S",
        help="per-connection media MB/s (0: unthrottled)",
    )
    p.add_argument(
        "--failed-recordings",
        type=float,
        default=0.03,
        metavar="SHARE",
        help="share of recordings whose egress failed (no file), 0 to 1",
    )
    return p


def to_argv(config: SimulatorConfig) -> list[str]:
    """The CLI arguments reproducing `config` (fields without a flag must be defaults)."""
    return [
        f"--seed={config.seed}",
        f"--experiments={config.experiments}",
        f"--rooms={config.rooms}",
        f"--participants={config.participants}",
        f"--records={config.records}",
        f"--latency-ms={config.latency_ms}",
        f"--jitter-ms={config.jitter_ms}",
        f"--rate-limit={config.rate_limit}",
        f"--rate-window={config.rate_window}",
        f"--faults={config.faults}",
        f"--max-page-size={config.max_page_size}",
        f"--oversize-limit={config.oversize_limit}",
        f"--record-us={config.record_us}",
        f"--capacity={config.capacity}",
        f"--media-bytes={config.media_bytes}",
        f"--media-mbps={config.media_mbps}",
        f"--failed-recordings={config.failed_recordings}",
    ]


def summary_lines(base_url: str, api_key: str, dataset: Dataset) -> list[str]:
    lines = [f"HYPERSTUDY_BASE_URL={base_url}", f"HYPERSTUDY_API_KEY={api_key}"]
    for exp_id in dataset.experiment_ids:
        exp = dataset.experiment(exp_id)
        records = sum(dataset.total(t, "experiment", exp_id) for t in DATA_TYPES if t != "rooms")
        members = sum(len(room.members) for room in exp.rooms)
        lines.append(
            f"# experiment {exp_id} rooms={len(exp.rooms)} participants={members} records={records}"
        )
    return [*lines, READY_LINE]


async def _run(config: SimulatorConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(config, host, port) as sim:
        print("\n".join(summary_lines(sim.base_url, sim.api_key, sim.dataset)), flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse argv, serve until interrupted; 0 on clean shutdown, 2 on bad arguments."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        config = SimulatorConfig(
            seed=args.seed,
            experiments=args.experiments,
            rooms=args.rooms,
            participants=args.participants,
            records=args.records,
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            rate_limit=args.rate_limit,
            rate_window=args.rate_window,
            faults=args.faults,
            max_page_size=args.max_page_size,
            oversize_limit=args.oversize_limit,
            record_us=args.record_us,
            capacity=args.capacity,
            media_bytes=args.media_bytes,
            media_mbps=args.media_mbps,
            failed_recordings=args.failed_recordings,
        )
        if not 0 <= args.port <= 65535:
            raise _UsageError(f"port {args.port} is out of range")
    except (_UsageError, ValueError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    try:
        asyncio.run(_run(config, args.host, args.port))
    except OSError as exc:
        print(
            f"{parser.prog}: error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0
