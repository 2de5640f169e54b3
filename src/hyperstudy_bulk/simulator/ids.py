"""Deterministic hashing and identifiers.

Every generated value is a pure function of integers through splitmix64, so any record of any
stream can be produced in O(1) from (seed, stream, index) without touching its neighbours.
"""

from __future__ import annotations

import hashlib

MASK64 = (1 << 64) - 1
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PAIRS = tuple(a + b for a in ALNUM for b in ALNUM)
_NPAIRS = len(_PAIRS)


def mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-distributed 64-bit integer hash."""
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def hash_ints(*parts: int) -> int:
    """Fold integers into one 64-bit hash; order matters."""
    acc = 0x243F6A8885A308D3
    for part in parts:
        acc = mix64(acc ^ (part & MASK64))
    return acc


def hash_text(text: str) -> int:
    """Stable 64-bit hash of a string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def unit(h: int) -> float:
    """Map a 64-bit hash to a float in [0, 1)."""
    return (h >> 11) / float(1 << 53)


def firestore_id(h: int) -> str:
    """A 20-character alphanumeric id, shaped like Firestore's auto ids."""
    out = []
    for value in (mix64(h ^ 0x5851F42D4C957F2D), mix64(h ^ 0x14057B7EF767814F)):
        for _ in range(5):
            value, digit = divmod(value, _NPAIRS)
            out.append(_PAIRS[digit])
    return "".join(out)


def api_key_for_seed(seed: int) -> str:
    """The default test key: valid per the contract's `hst_(live|test)_[A-Za-z0-9]+` pattern."""
    h = hash_ints(seed, hash_text("api-key"))
    return "hst_test_" + firestore_id(h) + firestore_id(mix64(h))[:12]


HOSTILE_ROOM_IDS = (
    "../../etc/passwd",
    "room/with/slash",
    "back\\slash\\room",
    "line\nbreak\x1froom",
    "..",
    "房间-ünïcødé-🎥",
    "R" * 300,
    "CaseRoom",
    "caseroom",
)
HOSTILE_PARTICIPANT_IDS = (
    "p/1",
    "..\\p",
    "CON",
    "Ab",
    "aB",
    "émilie\u200f\u202e",
    "x" * 300,
)
HOSTILE_RECORDING_IDS = ("rec/../../x", "..", "rec\\win", "R" * 300, "Rec", "rec")


def hostile(pool: tuple[str, ...], index: int, group: int) -> str | None:
    """Hostile id number `index` of a pool, made unique per `group` (experiment or room)."""
    if index >= len(pool):
        return None
    base = pool[index]
    return base if group == 0 else f"{base}-{group}"
