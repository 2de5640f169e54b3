"""One writer at a time: an exclusive `flock` on a lock file, refused at once when held.

`flock` (not `fcntl`/`lockf` record locks) because its lock belongs to the open file, not the
process: two threads of one process that each open the file exclude each other just as two
processes do, and the kernel drops the lock when its holder dies, however it dies (no stale
lock to clean up after a crash or `kill -9`). The holder's pid is written into the file only
to name it in the refusal. A lock file may be removed by its holder (see `archive_lock`), so
a lock is taken only once the file locked is still the one at its path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from hyperstudy_bulk.errors import BusyError, LocksUnavailable, StorageError

LOCK_NAME = ".hyperstudy-bulk.lock"
"""The lock file in an archive's folder (not NDJSON, not listed in the manifest)."""


_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
"""What flock fails with where the file system has no locks (EOPNOTSUPP is also ENOTSUP)."""


@contextlib.contextmanager
def exclusive(
    path: Path, *, what: str, unlocked: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created, with its folder, if missing) for the block.

    Raises BusyError at once, without waiting, when another process or thread holds it;
    `what` names the thing protected in that message. Raises StorageError when the lock file
    cannot be created, LocksUnavailable where the file system has no locks; given `unlocked`,
    it is told why instead and the block runs without the lock. Released on leaving the block,
    by any way out.
    """
    try:
        descriptor: int | None = _acquire(path, what)
    except LocksUnavailable as error:
        if unlocked is None:
            raise
        unlocked(f"{error}: make sure no other run writes {what} meanwhile")
        descriptor = None
    try:
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)


@contextlib.contextmanager
def archive_lock(folder: Path, *, unlocked: Callable[[str], None] | None = None) -> Iterator[None]:
    """`exclusive` on the archive's own lock file, so two runs never write one archive. A
    folder made only to hold the lock is removed again if nothing else was written in it (a
    mistyped experiment id leaves nothing behind)."""
    made = not folder.exists()
    path = folder / LOCK_NAME
    with exclusive(path, what=f"the archive {folder}", unlocked=unlocked):
        try:
            yield
        finally:
            if made and [entry.name for entry in folder.iterdir()] == [LOCK_NAME]:
                path.unlink()
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _acquire(path: Path, what: str) -> int:
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as error:
            raise StorageError.from_os_error(error) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise BusyError(
                f"{what} is being written by another hyperstudy-bulk run{holder}; wait for it "
                "to finish (or stop it), then run the same command again"
            ) from None
        except OSError as error:
            os.close(descriptor)
            if error.errno not in _NO_LOCKS:
                raise StorageError.from_os_error(error) from None
            raise LocksUnavailable(
                f"cannot lock {path}: the file system has no file locks ({error.strerror})"
            ) from None
        if _still_at(path, descriptor):
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
            return descriptor
        os.close(descriptor)  # its holder removed it before we locked it: lock the new one


def _still_at(path: Path, descriptor: int) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def _holder(descriptor: int) -> str:
    text = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
    return f" (pid {text})" if text.isdigit() else ""
