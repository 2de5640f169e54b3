"""Settings: one frozen object built from flags > environment > .env > TOML config > defaults.

Every option is declared once in `OPTIONS`; the CLI flags, the environment variables
(`HYPERSTUDY_<NAME>`), the config file keys and config.example.toml all come from that table.
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values

from hyperstudy_bulk.datatypes import ALL_DATA_TYPES, DataType, data_type_named, data_type_names
from hyperstudy_bulk.errors import ConfigError
from hyperstudy_bulk.timespec import TimeBound, parse_time_bound

PRODUCTION_BASE_URL = "https://api.hyperstudy.io/api/v3"
ENV_PREFIX = "HYPERSTUDY_"
AUTO = "auto"
CONCURRENCY_BOUNDS = (4, 64)
"""The requests in flight an adaptive (`auto`) concurrency stays within."""


class ApiKey:
    """The API key. Its repr and str never show it; only `reveal()` does, for the header."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the key replaced: for server-supplied messages."""
        return text.replace(self._value, "<redacted>") if self._value else text

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "ApiKey(<redacted>)"

    __str__ = __repr__


class Granularity(enum.StrEnum):
    """Scope the data types are fetched at; auto picks the one needing the fewest requests."""

    AUTO = "auto"
    EXPERIMENT = "experiment"
    ROOM = "room"
    PARTICIPANT = "participant"


class ProgressMode(enum.StrEnum):
    """How progress is shown: auto is a live bar on a terminal and log lines elsewhere."""

    AUTO = "auto"
    BAR = "bar"
    LOG = "log"
    NONE = "none"


@dataclass(frozen=True)
class Settings:
    api_key: ApiKey = field(default_factory=lambda: ApiKey(""))
    base_url: str = PRODUCTION_BASE_URL
    out: Path = Path("hyperstudy-archive")
    data_types: tuple[DataType, ...] = ALL_DATA_TYPES
    room: tuple[str, ...] = ()
    participant: tuple[str, ...] = ()
    since: TimeBound | None = None
    until: TimeBound | None = None
    granularity: Granularity = Granularity.AUTO
    concurrency: int | Literal["auto"] = "auto"
    page_size: int | Literal["auto"] = "auto"
    max_page_size: int = 10_000
    rate_limit_per_hour: int = 1000
    rate_limit_per_minute_per_endpoint: int = 100
    rate_limit_time_scale: float = 1.0
    timeout: float = 300.0
    connect_timeout: float = 15.0
    max_attempts: int = 8
    max_retry_seconds: float = 3600.0
    retry_backoff: float = 0.5
    retry_backoff_max: float = 60.0
    part_max_mb: int = 512
    media: bool = True
    media_only: bool = False
    media_concurrency: int = 8
    progress: ProgressMode = ProgressMode.AUTO
    quiet: bool = False
    verbose: bool = False
    allow_insecure_http: bool = False

    @property
    def fixed_page_size(self) -> int | None:
        """`--page-size N`, or None for auto."""
        return None if self.page_size == AUTO else int(self.page_size)


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"must be a whole number >= {minimum}") from None
        if value < minimum:
            raise ValueError(f"must be a whole number >= {minimum}")
        return value

    return parse


def _whole_or_auto(minimum: int) -> Callable[[str], int | str]:
    whole = _whole(minimum)

    def parse(text: str) -> int | str:
        if text.strip().lower() == AUTO:
            return AUTO
        try:
            return whole(text)
        except ValueError:
            raise ValueError(f"must be auto or a whole number >= {minimum}") from None

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("must be a number > 0") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number > 0")
    return value


def _choice(kind: type[enum.StrEnum]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text.strip().lower())
        except ValueError:
            raise ValueError(f"must be one of {', '.join(kind)}") from None

    return parse


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _data_types(text: str) -> tuple[DataType, ...]:
    names = [name for name in text.replace(" ", ",").split(",") if name]
    if not names:
        raise ValueError(f"must name at least one of {', '.join(data_type_names())}")
    chosen: list[DataType] = []
    for name in names:
        try:
            data_type = data_type_named(name)
        except KeyError:
            raise ValueError(
                f"has unknown data type {name!r}; choose from {', '.join(data_type_names())}"
            ) from None
        if data_type not in chosen:
            chosen.append(data_type)
    return tuple(chosen)


def _ids(text: str) -> tuple[str, ...]:
    ids = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not ids:
        raise ValueError("must name at least one id (repeat the option or separate ids by commas)")
    return ids


def _base_url(text: str) -> str:
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL such as " + PRODUCTION_BASE_URL)
    return url


@dataclass(frozen=True)
class Option:
    """One setting: its parser from text, and one line on what it does."""

    name: str
    parse: Callable[[str], Any]
    help: str
    metavar: str = "VALUE"
    """What the value is, as --help shows it: N, SECONDS, MIB, the choices, ..."""
    secret: bool = False
    repeatable: bool = False
    """A flag that may be given several times (its values join as if comma-separated)."""
    example: str = ""
    """A TOML value shown (commented out) in config.example.toml for options with no default."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def default(self) -> Any:
        return getattr(Settings(), self.name)


def choices_text(kind: type[enum.StrEnum]) -> str:
    """The choices as --help shows them: {a,b,c}."""
    return "{" + ",".join(kind) + "}"


OPTIONS: tuple[Option, ...] = (
    Option(
        "api_key",
        lambda text: ApiKey(text.strip()),
        "API key (hst_live_... or hst_test_...); prefer the environment or .env",
        secret=True,
        metavar="KEY",
    ),
    Option("base_url", _base_url, "API base URL", metavar="URL"),
    Option("out", Path, "folder that receives one sub-folder per experiment", metavar="DIR"),
    Option("data_types", _data_types, "comma-separated data types to archive", metavar="TYPES"),
    Option(
        "room",
        _ids,
        "only these rooms (repeat, or separate ids by commas): every data type at room scope",
        repeatable=True,
        example='["ROOM_ID", "ANOTHER_ROOM_ID"]',
        metavar="ROOM_IDS",
    ),
    Option(
        "participant",
        _ids,
        "only these participants of the one --room given (participant scope)",
        repeatable=True,
        example='["PARTICIPANT_ID"]',
        metavar="PARTICIPANT_IDS",
    ),
    Option(
        "since",
        parse_time_bound,
        "only records from this time on: ISO 8601, or a span ago such as 2h or 7d",
        example='"7d"',
        metavar="TIME",
    ),
    Option(
        "until",
        parse_time_bound,
        "only records before this time: ISO 8601, or a span ago such as 1h",
        example='"2026-03-01T09:00:00Z"',
        metavar="TIME",
    ),
    Option(
        "granularity",
        _choice(Granularity),
        "scope to fetch at: experiment, room, participant, or auto (fewest requests)",
        metavar=choices_text(Granularity),
    ),
    Option(
        "concurrency",
        _whole_or_auto(1),
        "HTTP requests in flight at once, or auto (adapts between 4 and 64 to the latency)",
        metavar="N|auto",
    ),
    Option(
        "page_size",
        _whole_or_auto(1),
        "records asked for per page, or auto (the largest the server grants, up to max_page_size)",
        metavar="N|auto",
    ),
    Option(
        "max_page_size",
        _whole(1),
        "records the first page of each data type asks for (auto)",
        metavar="N",
    ),
    Option(
        "rate_limit_per_hour", _whole(1), "requests per hour allowed for the API key", metavar="N"
    ),
    Option(
        "rate_limit_per_minute_per_endpoint",
        _whole(1),
        "requests per minute allowed per endpoint",
        metavar="N",
    ),
    Option(
        "rate_limit_time_scale",
        _positive_float,
        "divide the rate-limit windows by this (only for a simulator on a scaled clock)",
        metavar="FACTOR",
    ),
    Option(
        "timeout",
        _positive_float,
        "seconds to wait for a response once connected",
        metavar="SECONDS",
    ),
    Option(
        "connect_timeout", _positive_float, "seconds to wait for a connection", metavar="SECONDS"
    ),
    Option(
        "max_attempts",
        _whole(1),
        "attempts per request before a transient fault ends the stream",
        metavar="N",
    ),
    Option(
        "max_retry_seconds",
        _positive_float,
        "seconds one request may spend retrying, waits included",
        metavar="SECONDS",
    ),
    Option(
        "retry_backoff",
        _positive_float,
        "seconds: the exponential backoff's base (waits are random up to base * 2^attempt)",
        metavar="SECONDS",
    ),
    Option(
        "retry_backoff_max",
        _positive_float,
        "seconds: the longest backoff between attempts",
        metavar="SECONDS",
    ),
    Option(
        "part_max_mb", _whole(1), "start a new NDJSON part file after this many MiB", metavar="MIB"
    ),
    Option("media", _boolean, "fetch every recording's video or audio file"),
    Option(
        "media_only",
        _boolean,
        "fetch only the media files of an archive whose records are already there",
    ),
    Option(
        "media_concurrency",
        _whole(1),
        "media files downloaded at once (bandwidth-bound; not counted in the request budget)",
        metavar="N",
    ),
    Option(
        "progress",
        _choice(ProgressMode),
        "auto (bar on a terminal, log lines otherwise), bar, log, or none",
        metavar=choices_text(ProgressMode),
    ),
    Option("quiet", _boolean, "print only errors and the final line"),
    Option("verbose", _boolean, "log every retry and rate-limit pause"),
    Option("allow_insecure_http", _boolean, "allow plain http to hosts other than loopback"),
)

_BY_NAME = {option.name: option for option in OPTIONS}


def _parse(option: Option, raw: object, source: str) -> Any:
    text = raw if isinstance(raw, str) else _toml_to_text(raw, option, source)
    try:
        return option.parse(text)
    except ValueError as error:
        shown = "<redacted>" if option.secret else repr(text)
        raise ConfigError(f"{source}: {option.name} {error} (got {shown})") from None


def _toml_to_text(raw: object, option: Option, source: str) -> str:
    if isinstance(raw, ApiKey):
        return raw.reveal()
    if isinstance(raw, TimeBound):
        return raw.text
    if isinstance(raw, os.PathLike):
        return str(os.fspath(raw))
    if isinstance(raw, tuple):
        raw = [str(item) for item in raw]
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return str(raw)
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return ",".join(raw)
    raise ConfigError(f"{source}: {option.name} has a value of the wrong type ({raw!r})")


def read_config_file(path: Path) -> dict[str, object]:
    """The TOML file's keys, checked against the known options."""
    try:
        with path.open("rb") as stream:
            document = tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    _check_names(document, f"config file {path}: unknown key")
    return document


def _check_names(names: Iterable[str], unknown: str) -> None:
    """Raise ConfigError for the first name that is not an option, with the closest one: a
    misspelt option silently ignored would archive with the wrong settings."""
    for name in names:
        if name not in _BY_NAME:
            close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{unknown} {name!r}{hint}")


def load_settings(
    flags: Mapping[str, object],
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Resolve every option by precedence: flags > environment > .env > config file > default.

    `flags` holds only the options given on the command line or to `download()` (already
    strings or values). Raises ConfigError naming the option, where its value came from, and
    what is allowed; an unknown option name is refused with the closest known one.
    """
    _check_names(flags, "unknown option")
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    dotenv_path = cwd / ".env"
    dotenv = (
        {k: v for k, v in dotenv_values(dotenv_path).items() if v is not None}
        if dotenv_path.is_file()
        else {}
    )
    config_path = config_file or _config_path(environ, dotenv)
    document = read_config_file(config_path) if config_path else {}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        if flags.get(option.name) is not None:
            raw = flags[option.name]
            flag = option.flag.replace("--", "--no-", 1) if raw is False else option.flag
            source = f"option {flag}"
        elif option.env in environ:
            raw, source = environ[option.env], f"environment variable {option.env}"
        elif option.env in dotenv:
            raw, source = dotenv[option.env], f"{dotenv_path} ({option.env})"
        elif option.name in document:
            raw, source = document[option.name], f"config file {config_path}"
        else:
            continue
        values[option.name] = _parse(option, raw, source)
        sources[option.name] = source
    settings = Settings(**values)
    if settings.media_only and not settings.media:
        raise ConfigError(
            f"media_only ({sources['media_only']}) fetches only the media files that media = "
            f"false ({sources['media']}) turns off: drop one of them"
        )
    _check_transport(settings)
    return settings


def _config_path(environ: Mapping[str, str], dotenv: Mapping[str, str]) -> Path | None:
    value = environ.get(ENV_PREFIX + "CONFIG") or dotenv.get(ENV_PREFIX + "CONFIG")
    return Path(value) if value else None


def _check_transport(settings: Settings) -> None:
    host = urlsplit(settings.base_url).hostname or ""
    if (
        urlsplit(settings.base_url).scheme == "http"
        and not settings.allow_insecure_http
        and not is_loopback(host)
    ):
        raise ConfigError(
            f"base URL {settings.base_url} uses plain http to a non-loopback host; use https, "
            "or pass --allow-insecure-http if you really mean it"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def example_config() -> str:
    """The text of config.example.toml: every key, its default, and what it does."""
    lines = [
        "# hyperstudy-bulk configuration (pass with --config FILE or HYPERSTUDY_CONFIG).",
        "# Precedence: flags > environment (HYPERSTUDY_<KEY>) > .env > this file > defaults.",
        "# Every key below is shown with its default.",
        "",
    ]
    for option in OPTIONS:
        lines.append(f"# {option.help}")
        if option.example:
            lines.append(f"# {option.name} = {option.example}   (default: none)")
        else:
            lines.append(
                ("# " if option.secret else "") + f"{option.name} = {_toml_literal(option.default)}"
            )
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _toml_literal(value: object) -> str:
    if isinstance(value, ApiKey):
        return '"hst_live_..."'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{item}"' for item in value) + "]"
    return f'"{value}"'
