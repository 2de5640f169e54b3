"""Recording files: signed URLs, deterministic bytes, and HTTP Range arithmetic.

Signed URLs stand in for GCS V4 URLs: fetched without the API key, valid until `expires`
(unix seconds), authenticated by an HMAC over (roomId, recordingId, format, expires).
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Iterator
from typing import Literal
from urllib.parse import quote

from hyperstudy_bulk.simulator.ids import hash_ints, hash_text

BLOCK = 65_536
_MAGIC = {"mp4": b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "webm": b"\x1aE\xdf\xa3"}


class Signer:
    """Mints and checks media URLs with a key derived from the seed."""

    def __init__(self, seed: int) -> None:
        self._key = hashlib.blake2b(f"media-signing-{seed}".encode()).digest()

    def _sig(self, room_id: str, recording_id: str, fmt: str, expires: int) -> str:
        msg = "\x00".join((room_id, recording_id, fmt, str(expires))).encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def path(self, room_id: str, recording_id: str, fmt: str, expires: int) -> str:
        """Server-relative signed path; ids are percent-encoded so any id survives."""
        return (
            f"/media/{quote(room_id, safe='')}/{quote(recording_id, safe='')}.{fmt}"
            f"?expires={expires}&sig={self._sig(room_id, recording_id, fmt, expires)}"
        )

    def valid(self, room_id: str, recording_id: str, fmt: str, expires: int, sig: str) -> bool:
        return hmac.compare_digest(self._sig(room_id, recording_id, fmt, expires), sig)


def block(seed: int, room_id: str, recording_id: str, fmt: str) -> bytes:
    """The 64 KiB pattern a file repeats, starting with its container's magic bytes."""
    rng = random.Random(hash_ints(seed, hash_text(room_id), hash_text(recording_id)))
    magic = _MAGIC.get(fmt, b"")
    return magic + rng.randbytes(BLOCK - len(magic))


def chunks(pattern: bytes, start: int, end: int) -> Iterator[bytes]:
    """Bytes [start, end) of the file that repeats `pattern`, at most one block at a time."""
    size = len(pattern)
    pos = start
    while pos < end:
        at = pos % size
        piece = pattern[at : min(size, at + end - pos)]
        yield piece
        pos += len(piece)


def parse_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """One `bytes=` range -> (start, end exclusive); None to serve all; False if unsatisfiable.

    Malformed or multi-range headers are ignored (RFC 9110 allows it), so they yield None.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                return False
            return max(0, size - suffix), size
        start = int(first)
        end = size if last == "" else min(size, int(last) + 1)
    except ValueError:
        return None
    if start < 0 or (last != "" and int(last) < start):
        return None
    if start >= size:
        return False
    return start, end
