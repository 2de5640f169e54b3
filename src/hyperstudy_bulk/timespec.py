"""Moments as the API and the archive spell them, and `--since` / `--until` as users write them.

A bound is either absolute (ISO 8601; a time without a zone is UTC) or relative to the moment a
run starts (`90m`, `2h`, `7d`, `1w`: that long ago). A relative bound is resolved once, when an
archive is created, and the manifest keeps both spellings, so running the same command again
continues the same archive instead of drifting with the clock. Pure: `now` is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def iso_utc(moment: datetime) -> str:
    """The one spelling of a moment used in requests and manifests (millisecond precision, Z):
    strings in it compare in time order."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """An ISO 8601 moment (naive means UTC). Raises ValueError."""
    moment = datetime.fromisoformat(text.strip())
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TimeBound:
    """`--since` / `--until` as asked: `text` is its normalised spelling (what an archive
    compares when the same command runs again)."""

    text: str
    ago: timedelta | None = None
    moment: datetime | None = None

    def resolve(self, now: datetime) -> str:
        """The bound as an ISO moment, relative ones counted back from `now`."""
        return iso_utc(now - self.ago if self.ago is not None else self.moment or now)

    def __str__(self) -> str:
        return self.text


def parse_duration(text: str) -> float:
    """Seconds from `30s`, `5m`, `1h` or a plain number of seconds (> 0). Raises ValueError."""
    value = text.strip().lower()
    relative = _RELATIVE.match(value if not value.isdigit() else value + "s")
    if not relative or int(relative.group(1)) == 0:
        raise ValueError("must be a duration such as 30s, 5m or 1h")
    return timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))}).total_seconds()


def parse_time_bound(text: str) -> TimeBound:
    """`2026-03-01T09:00:00Z`, `2026-03-01`, or a span ago like `30m`, `2h`, `7d`, `1w`.
    Raises ValueError with what is allowed."""
    value = text.strip()
    relative = _RELATIVE.match(value.lower())
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return TimeBound(f"{amount}{unit}", ago=timedelta(**{_UNITS[unit]: amount}))
    try:
        moment = parse_iso(value)
    except ValueError:
        raise ValueError(
            "must be an ISO 8601 time (2026-03-01T09:00:00Z) or a span ago such as 30m, 2h, 7d"
        ) from None
    return TimeBound(iso_utc(moment), moment=moment)
