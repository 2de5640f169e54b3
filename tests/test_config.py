"""Settings resolution: flags > environment > .env > config file > defaults, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperstudy_bulk.config import (
    OPTIONS,
    ApiKey,
    Granularity,
    Settings,
    example_config,
    load_settings,
)
from hyperstudy_bulk.datatypes import CHAT, EVENTS
from hyperstudy_bulk.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_flags_env_dotenv_file_default(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('concurrency = 5\npage_size = 50\ntimeout = 9.5\ngranularity = "room"\n')
    (tmp_path / ".env").write_text("HYPERSTUDY_PAGE_SIZE=60\nHYPERSTUDY_TIMEOUT=8\n")
    settings = load_settings(
        {"timeout": "7"},
        environ={"HYPERSTUDY_PAGE_SIZE": "70"},
        cwd=tmp_path,
        config_file=config,
    )
    assert settings.concurrency == 5  # config file
    assert settings.granularity is Granularity.ROOM  # config file
    assert settings.page_size == 70  # environment beats .env and file
    assert settings.timeout == 7.0  # flag beats everything
    assert settings.rate_limit_per_hour == 1000  # default


def test_dotenv_beats_config_file_and_supplies_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("rate_limit_per_hour = 10\n")
    (tmp_path / ".env").write_text(
        "HYPERSTUDY_API_KEY=hst_test_abc\nHYPERSTUDY_RATE_LIMIT_PER_HOUR=20\n"
    )
    settings = load_settings({}, environ={}, cwd=tmp_path, config_file=config)
    assert settings.rate_limit_per_hour == 20
    assert settings.api_key.reveal() == "hst_test_abc"


def test_rate_limits_come_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        {},
        environ={
            "HYPERSTUDY_RATE_LIMIT_PER_HOUR": "500",
            "HYPERSTUDY_RATE_LIMIT_PER_MINUTE_PER_ENDPOINT": "40",
        },
        cwd=tmp_path,
    )
    assert (settings.rate_limit_per_hour, settings.rate_limit_per_minute_per_endpoint) == (500, 40)


def test_data_types_accept_folder_and_path_names(tmp_path: Path) -> None:
    settings = load_settings({"data_types": "events, chat,events"}, environ={}, cwd=tmp_path)
    assert settings.data_types == (EVENTS, CHAT)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"concurrency": "many"},
            "option --concurrency: concurrency must be auto or a whole number >= 1",
        ),
        ({"page_size": "0"}, "page_size must be auto or a whole number >= 1 (got '0')"),
        ({"timeout": "-3"}, "timeout must be a number > 0"),
        ({"granularity": "session"}, "must be one of auto, experiment, room, participant"),
        ({"data_types": "events,audio"}, "unknown data type 'audio'"),
        ({"base_url": "ftp://example.org/api"}, "base_url must be an http(s) URL"),
        ({"base_url": "http://example.org/api/v3"}, "plain http to a non-loopback host"),
    ],
)
def test_bad_values_name_the_option_and_the_rule(
    tmp_path: Path, flags: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(flags, environ={}, cwd=tmp_path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment variable HYPERSTUDY_CONCURRENCY"):
        load_settings({}, environ={"HYPERSTUDY_CONCURRENCY": "x"}, cwd=tmp_path)


def test_malformed_toml_reports_the_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("concurrency = 4\npage_size = = 3\n")
    with pytest.raises(ConfigError, match=r"is not valid TOML: .*line 2"):
        load_settings({}, environ={}, cwd=tmp_path, config_file=config)


def test_unknown_config_key_suggests_the_closest(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("concurency = 4\n")
    with pytest.raises(
        ConfigError, match="unknown key 'concurency' \\(did you mean 'concurrency'\\?\\)"
    ):
        load_settings({}, environ={}, cwd=tmp_path, config_file=config)


def test_wrong_toml_type_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("concurrency = [1, 2]\n")
    with pytest.raises(ConfigError, match="concurrency has a value of the wrong type"):
        load_settings({}, environ={}, cwd=tmp_path, config_file=config)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, environ={}, cwd=tmp_path, config_file=tmp_path / "nope.toml")


def test_api_key_never_shows_in_repr_or_errors(tmp_path: Path) -> None:
    key = "hst_test_SECRETSECRET123"
    settings = load_settings({"api_key": key}, environ={}, cwd=tmp_path)
    assert key not in repr(settings)
    assert key not in str(settings.api_key)
    assert ApiKey(key).redact(f"bad key {key}!") == "bad key <redacted>!"


def test_config_example_lists_every_key_with_its_default() -> None:
    text = (ROOT / "config.example.toml").read_text()
    assert text == example_config()
    for option in OPTIONS:
        assert f"{option.name} = " in text
    assert 'concurrency = "auto"\n' in text
    assert 'page_size = "auto"\n' in text
    assert 'granularity = "auto"' in text


def test_example_config_loads_back_to_the_defaults(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(example_config())
    settings = load_settings({}, environ={}, cwd=tmp_path, config_file=config)
    assert settings == Settings(api_key=settings.api_key)
