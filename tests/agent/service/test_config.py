"""Agent settings: flag > env > config file > default; per-OS defaults; the agent's own bounds.

The loader itself (file reading, unknown keys, types, durations) is tested in tests/settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.service.config import OPTIONS, ConfigError, default_state_dir, load_settings


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\nupload_batch = 7\nhttp_timeout = 3.5\nlog_format = "json"\nserver = "https://f"\n')
    env = {"TELEPOSTURE_CONFIG": str(config), "TELEPOSTURE_HTTP_TIMEOUT": "9", "TELEPOSTURE_SERVER": "https://e"}
    settings = load_settings({"server": "https://flag"}, environ=env)
    assert settings.server == "https://flag" and settings.sources["server"] == "flag --server"
    assert settings.http_timeout == 9.0 and settings.sources["http_timeout"] == "env TELEPOSTURE_HTTP_TIMEOUT"
    assert settings.upload_batch == 7 and settings.sources["upload_batch"] == f"config {config}"
    assert settings.log_format == "json"
    assert settings.outbox_max_reports == 5000 and settings.sources["outbox_max_reports"] == "default"
    assert settings.config_path == config


def test_state_dir_from_env_and_flag(tmp_path: Path) -> None:
    env = {"TELEPOSTURE_CONFIG": "", "TELEPOSTURE_STATE_DIR": str(tmp_path / "env")}
    assert load_settings({}, environ=env).state_dir == tmp_path / "env"
    assert load_settings({"state_dir": str(tmp_path / "f")}, environ=env).state_dir == tmp_path / "f"


@pytest.mark.parametrize("platform, expected", [
    ("linux", "/var/lib/teleposture"),
    ("darwin", "/Library/Application Support/Teleposture"),
    ("windows", "D:\\PD/Teleposture"),
])
def test_per_os_default_state_dir(platform: str, expected: str) -> None:
    assert str(default_state_dir(platform, {"ProgramData": "D:\\PD"})) == expected


def test_bool_env_and_json_config(tmp_path: Path) -> None:
    config = tmp_path / "agent.json"
    config.write_text('{"allow_http": true, "outbox_max_bytes": 1000}')
    settings = load_settings({"config": str(config)}, environ={})
    assert settings.allow_http is True and settings.outbox_max_bytes == 1000
    assert load_settings({}, environ={"TELEPOSTURE_CONFIG": "", "TELEPOSTURE_ALLOW_HTTP": "0"}).allow_http is False


@pytest.mark.parametrize("env, message", [
    ({"TELEPOSTURE_UPLOAD_BATCH": "many"}, "upload_batch from env TELEPOSTURE_UPLOAD_BATCH: expected an integer"),
    ({"TELEPOSTURE_ALLOW_HTTP": "perhaps"}, "expected true or false"),
    ({"TELEPOSTURE_LOG_FORMAT": "xml"}, "expected one of text, json"),
    ({"TELEPOSTURE_UPLOAD_BATCH": "0"}, "must be at least 1"),
    ({"TELEPOSTURE_HTTP_TIMEOUT": "nan"}, "http_timeout from env TELEPOSTURE_HTTP_TIMEOUT: expected a duration"),
    ({"TELEPOSTURE_BACKOFF_BASE": "0.01"}, "backoff_base .* at least 0.05 seconds"),
])
def test_bad_values_name_their_source(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({}, environ=dict(env, TELEPOSTURE_CONFIG=""))


def test_named_config_file_must_exist_and_know_its_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings({"config": str(tmp_path / "missing.toml")}, environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("uplaod_batch = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml, at the top level: unknown setting 'uplaod_batch' "
                                          r"\(did you mean 'upload_batch'\?\)"):
        load_settings({"config": str(bad)}, environ={})


def test_an_empty_config_variable_means_no_file(tmp_path: Path) -> None:
    assert load_settings({}, environ={"TELEPOSTURE_CONFIG": ""}).config_path is None


def test_intervals_take_durations_and_plain_seconds(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\ncheck_interval = "15m"\nupload_interval = 120\nnotify_reminder = "1.5h"\n')
    settings = load_settings({"config": str(config), "vpn_sample_interval": "90"},
                             environ={"TELEPOSTURE_POLICY_REFRESH_INTERVAL": "2h"})
    assert settings.intervals_override() == {"check": 900.0, "upload": 120.0, "policy_refresh": 7200.0,
                                             "vpn_sample": 90.0}
    assert settings.notify_reminder == 5400.0


def test_every_option_is_a_flag_and_an_environment_variable() -> None:
    names = [option.name for option in OPTIONS]
    assert len(names) == len(set(names))
    assert all(option.env == "TELEPOSTURE_" + option.name.upper() for option in OPTIONS)
    assert {option.flag for option in OPTIONS} >= {"--state-dir", "--server", "--check-interval"}
