"""`hyperstudy-bulk` with its snapshot clock pinned: `python _pinned_cli.py ISO_TIME ARGS...`.

Why: the CLI bounds every time-ordered stream with endTime = the moment the run starts, and the
simulator keys its page cache on the raw endTime string, so two CLI runs never share a cached
page and every timed run would pay the simulator's page generation. The CLI has no option to
set the snapshot time, so this launcher passes `now=` to the runner (which accepts it) and then
runs the unmodified CLI entry point; nothing else differs from `hyperstudy-bulk ARGS...`.
"""

from __future__ import annotations

import functools
import sys
from datetime import datetime

from hyperstudy_bulk import api, cli, runner


def main() -> int:
    moment = datetime.fromisoformat(sys.argv[1].replace("Z", "+00:00"))
    pinned = functools.partial(runner.archive_experiment, now=moment)
    setattr(api, "archive_experiment", pinned)  # noqa: B010 (not a public attribute)
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
