"""One API key's requests, shared through a file by every process using the key on one --out:
the shards of a SLURM array (on any nodes, where the file system's locks work) and whoever
runs after them, such as a requeued task starting within the hour.

The ledger is an append-only log of lines `c <id> <sent> <endpoint>` (a request admitted at
unix time `sent`) and `d <id> <ended>` (its response ended). A request holds a permit of the
key's hour window and of its endpoint's minute window from `sent` until `ended + period`, like
`budget.SlidingWindow`; one whose end was never logged (its process died with it in flight)
holds it until `sent + 2 * period`, by when the server has surely stopped counting it.

Admission takes the lock (a blocking `flock` on a file beside the log, kept open: waiting
is the kernel's, and an admission costs a few system calls rather than opening and writing a
lock file each time), reads what others appended since, and logs the request only if both
windows have room; otherwise it sleeps until the earliest permit can come back and tries
again. Ends are appended without the lock (small O_APPEND writes), and a reader keeps a torn
last line for its next read. Times are wall-clock seconds: processes on different nodes share
no other clock.

A long job would grow the log without bound, so once it is large and mostly lines that no
longer count, the admitting process rewrites it (under the lock) with only the requests that
still count, and renames it into place; every process notices the new file at its next read
and reads it from the start. An end appended to the old file in between is lost: its request
then counts until `sent + 2 * period`, which errs on the safe side.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hyperstudy_bulk.budget import Budget
from hyperstudy_bulk.config import Settings
from hyperstudy_bulk.errors import StorageError

LEDGER_DIR = ".hyperstudy"
T = TypeVar("T")
COMPACT_BYTES = 256 * 1024
"""Log size from which it is rewritten, if less than half of it still counts (at the key's
1000 requests an hour the lines that count stay under 100 KB)."""


@dataclass
class _Request:
    endpoint: str
    sent: float
    ended: float | None = None

    def frees(self, period: float) -> float:
        """When the request stops counting in a window of `period` seconds."""
        return self.sent + 2 * period if self.ended is None else self.ended + period

    def frees_at_least(self, period: float) -> float:
        """The earliest it could stop counting (an unfinished request may end any moment)."""
        return (self.sent if self.ended is None else self.ended) + period


def ledger_path(settings: Settings) -> Path:
    """The key's ledger in `--out`: named by a hash of the key and base URL, never the key."""
    digest = hashlib.sha256(
        f"{settings.base_url}\n{settings.api_key.reveal()}".encode()
    ).hexdigest()
    return settings.out / LEDGER_DIR / f"requests-{digest[:16]}.log"


class RequestLedger:
    """The shared windows: at most `per_hour` requests of the key in any `hour` seconds and
    `per_minute` of one endpoint in any `minute` seconds, across every process."""

    def __init__(
        self,
        path: Path,
        *,
        per_hour: int,
        per_minute: int,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
        compact_bytes: int = COMPACT_BYTES,
    ) -> None:
        self.path = path
        self._compact_bytes = compact_bytes
        self.per_hour, self.per_minute = per_hour, per_minute
        self.hour, self.minute = 3600.0 / time_scale, 60.0 / time_scale
        self._clock = clock
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._read_to = 0
        self._torn = b""
        self._requests: dict[str, _Request] = {}
        self._by_time: deque[str] = deque()
        self._by_endpoint: dict[str, deque[_Request]] = {}
        self._unwritten: list[str] = []
        self._prefix = uuid.uuid4().hex[:10]
        self._issued = 0
        self._detached = False

    def open(self) -> None:
        """Create the files and check that locks work here; raises OSError where they do not.
        Requests admitted before are written to it now."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._reopen()
        with self._locked():
            self._read_new()
            if self._unwritten:
                self._append("".join(self._unwritten))
                self._unwritten.clear()

    def _attached(self) -> bool:
        """Whether the ledger file is open, opening it once --out holds a ledger or an
        archive's manifest: until then no earlier process can have left a ledger there, and a
        run that writes nothing (a mistyped experiment id) leaves no --out behind. Requests
        admitted meanwhile are kept and written when it opens."""
        if self._detached:
            return False
        if self._fd is None:
            out = self.path.parent.parent
            try:
                found = self.path.parent.is_dir() or next(out.glob("*/manifest.json"), None)
            except OSError:
                return False
            if not found:
                return False
            self.open()
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The ledger's lock, waited for in the kernel: its holders keep it for a few system
        calls. Its file stays open with the ledger (no process ever removes it)."""
        if self._lock_fd is None:
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            self._lock_fd = os.open(self.path.with_suffix(".lock"), flags, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for descriptor in (self._fd, self._lock_fd):
            if descriptor is not None:
                os.close(descriptor)
        self._fd = self._lock_fd = None

    def detach(self, share: int) -> None:
        """Go on without the file (it cannot be locked): count only this process's own
        requests, within 1/`share` of each limit, so that `share` processes doing the same
        stay within the key's limits with no file between them (a static share)."""
        self.close()
        self._detached = True
        self._unwritten.clear()
        self.per_hour = max(1, self.per_hour // share)
        self.per_minute = max(1, self.per_minute // share)
        own = {t: r for t, r in self._requests.items() if t.startswith(self._prefix)}
        order = [t for t in self._by_time if t in own]
        self._requests, self._by_time, self._by_endpoint = {}, deque(), {}
        for ticket in order:
            self._add(ticket, own[ticket])

    def held(self) -> int:
        """Permits of the hour window held now, by every process (for tests and logs)."""
        self._expire(self._clock())
        return len(self._by_time)

    def try_admit(self, endpoint: str) -> str | float:
        """Log a request to `endpoint` and return its id, or the seconds to wait first."""
        attached = self._attached()
        with self._locked() if attached else contextlib.nullcontext():
            if attached:
                self._read_new()
            now = self._clock()
            wait = self._wait(endpoint, now)
            if wait > 0:
                return wait
            self._issued += 1
            ticket = f"{self._prefix}{self._issued:x}"
            self._add(ticket, _Request(endpoint, now))
            self._append(f"c {ticket} {now:.3f} {endpoint}\n")
            if attached and self._read_to >= self._compact_bytes:
                self._compact()
            return ticket

    def ended(self, ticket: str) -> None:
        now = self._clock()
        request = self._requests.get(ticket)
        if request is not None:
            request.ended = now
        if self._fd is not None:
            self._follow_rename()  # an end belongs in the file that counts now
        self._append(f"d {ticket} {now:.3f}\n")

    def _compact(self) -> None:
        """Rewrite the log with only the requests that still count, if they are under half
        of it (holding the lock, having just read it whole)."""
        lines = []
        for ticket in self._by_time:
            request = self._requests[ticket]
            lines.append(f"c {ticket} {request.sent:.3f} {request.endpoint}\n")
            if request.ended is not None:
                lines.append(f"d {ticket} {request.ended:.3f}\n")
        kept = "".join(lines).encode()
        if 2 * len(kept) > self._read_to:
            return
        fresh = self.path.with_name(f"{self.path.name}.{self._prefix}.tmp")
        fresh.write_bytes(kept)
        fresh.chmod(0o600)
        os.replace(fresh, self.path)
        self._reopen()
        self._read_to = len(kept)

    def _reopen(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._read_to, self._torn = 0, b""

    def _follow_rename(self) -> None:
        """Open the log at its path again if another process has rewritten it since."""
        assert self._fd is not None
        opened = os.fstat(self._fd)
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        if current is None or (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            self._reopen()

    def _add(self, ticket: str, request: _Request) -> None:
        self._requests[ticket] = request
        self._by_time.append(ticket)
        self._by_endpoint.setdefault(request.endpoint, deque()).append(request)

    def _expire(self, now: float) -> None:
        """Forget requests that no longer count, oldest first. Requests end roughly in the
        order they were sent, so this stops at the first one still held: a later one that
        already expired is counted a little longer, which errs on the safe side."""
        while self._by_time:
            request = self._requests[self._by_time[0]]
            if request.frees(self.hour) > now:
                break
            del self._requests[self._by_time.popleft()]
        for queue in self._by_endpoint.values():
            while queue and queue[0].frees(self.minute) <= now:
                queue.popleft()

    def _wait(self, endpoint: str, now: float) -> float:
        """0 when both windows have room at `now`, else the seconds until a permit may return."""
        self._expire(now)
        waits = []
        if len(self._by_time) >= self.per_hour:
            oldest = self._requests[self._by_time[0]]
            waits.append(oldest.frees_at_least(self.hour) - now)
        queue = self._by_endpoint.get(endpoint)
        if queue is not None and len(queue) >= self.per_minute:
            waits.append(queue[0].frees_at_least(self.minute) - now)
        return max(0.001, *waits) if waits else 0.0

    def _append(self, line: str) -> None:
        if self._detached:
            return
        if self._fd is None:
            self._unwritten.append(line)
        else:
            os.write(self._fd, line.encode())

    def _read_new(self) -> None:
        assert self._fd is not None, "open() the ledger first"
        self._follow_rename()
        size = os.fstat(self._fd).st_size
        if size <= self._read_to:
            return
        chunk = self._torn + os.pread(self._fd, size - self._read_to, self._read_to)
        self._read_to = size
        *lines, self._torn = chunk.split(b"\n")
        for line in lines:
            self._apply(line.decode(errors="replace").split())

    def _apply(self, fields: list[str]) -> None:
        """One line of the log; a line that does not parse is ignored (it claims nothing)."""
        with contextlib.suppress(ValueError, IndexError):
            if fields[0] == "c" and len(fields) == 4 and fields[1] not in self._requests:
                self._add(fields[1], _Request(fields[3], float(fields[2])))
            elif fields[0] == "d" and len(fields) == 3 and fields[1] in self._requests:
                self._requests[fields[1]].ended = float(fields[2])


class SharedBudget(Budget):
    """A Budget that also admits every request through the ledger, so this process, the
    other shards and its predecessors together stay within the key's limits. Should the
    ledger fail mid-run (a file system losing its locks), each of the `shards` processes
    goes on with an even share of the limits (see `RequestLedger.detach`), and says so once."""

    def __init__(
        self,
        *,
        ledger: RequestLedger,
        log: Callable[[str], None],
        per_hour: int,
        per_minute_per_endpoint: int,
        time_scale: float = 1.0,
        shards: int = 1,
    ) -> None:
        super().__init__(
            per_hour=per_hour,
            per_minute_per_endpoint=per_minute_per_endpoint,
            time_scale=time_scale,
        )
        self.ledger = ledger
        self._log = log
        self._shards = shards
        self._admitting: dict[str, asyncio.Lock] = {}

    def close(self) -> None:
        self.ledger.close()

    @asynccontextmanager
    async def slot(self, endpoint: str) -> AsyncIterator[None]:
        async with super().slot(endpoint):
            ticket = await self._admit(endpoint)
            try:
                yield
            finally:
                self._safely(self.ledger.ended, ticket)

    async def _admit(self, endpoint: str) -> str:
        # One coroutine of this process asks the ledger per endpoint at a time, the others
        # queue in order: without it, every waiter would wake at each returning permit, and
        # all but one would read and lock the ledger for nothing.
        async with self._admitting.setdefault(endpoint, asyncio.Lock()):
            while True:
                outcome = self._safely(self.ledger.try_admit, endpoint)
                if not isinstance(outcome, float):
                    return outcome
                await asyncio.sleep(outcome)

    def _safely(self, call: Callable[[str], T], argument: str) -> T:
        try:
            return call(argument)
        except (OSError, StorageError) as error:
            self._log(f"the shared request ledger failed ({error}): {self.go_alone()}")
            return call(argument)  # detached now: no file, nothing that can fail

    def go_alone(self) -> str:
        """Go on with this process's share of the limits; what it now takes, for the log."""
        self.ledger.detach(self._shards)
        if self._shards == 1:
            return "continuing with this process's own budget"
        return f"each of the {self._shards} shards takes 1/{self._shards} of the key's limits"


def shared_budget(settings: Settings, *, log: Callable[[str], None], shards: int = 1) -> Budget:
    """The budget of a download into `settings.out`: the key's full limits, shared through the
    ledger with every other process using the key there. Where the ledger cannot be locked,
    each of `shards` processes takes an even share of the limits instead (a static share needs
    no coordination, but a shard that finishes early leaves its share unused)."""
    ledger = RequestLedger(
        ledger_path(settings),
        per_hour=settings.rate_limit_per_hour,
        per_minute=settings.rate_limit_per_minute_per_endpoint,
        time_scale=settings.rate_limit_time_scale,
    )
    budget = SharedBudget(
        ledger=ledger,
        log=log,
        per_hour=settings.rate_limit_per_hour,
        per_minute_per_endpoint=settings.rate_limit_per_minute_per_endpoint,
        time_scale=settings.rate_limit_time_scale,
        shards=shards,
    )
    if shards > 1:
        try:
            ledger.open()
        except (OSError, StorageError) as error:
            alone = budget.go_alone()
            log(f"the request ledger in {settings.out} cannot be locked ({error}): {alone}")
    return budget
