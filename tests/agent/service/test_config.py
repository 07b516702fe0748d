"""Settings: flag > env > config file > default; the TOML subset reader; per-OS defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.service.config import (
    ConfigError,
    default_state_dir,
    load_settings,
    parse_toml_subset,
    read_config_file,
)


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
    ({"TELEPOSTURE_HTTP_TIMEOUT": "nan"}, "non-negative number"),
])
def test_bad_values_name_their_source(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({}, environ=dict(env, TELEPOSTURE_CONFIG=""))


def test_named_config_file_must_exist_and_know_its_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings({"config": str(tmp_path / "missing.toml")}, environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("uplaod_batch = 3\n")
    with pytest.raises(ConfigError, match="unknown setting.*uplaod_batch"):
        read_config_file(bad)


def test_toml_subset_matches_tomllib_on_what_it_accepts() -> None:
    tomllib = pytest.importorskip("tomllib")  # 3.11+; on 3.9/3.10 the subset reader is all there is

    text = ('# comment\nserver = "https://c.example/\\u00e9"  # trailing\nca_file = \'C:\\certs\\ca.pem\'\n'
            "upload_batch = 1_000\nhttp_timeout = 2.5\nallow_http = false\n[agent]\nlog_level = \"debug\"\n")
    assert parse_toml_subset(text, "t.toml") == tomllib.loads(text)


@pytest.mark.parametrize("text, message", [
    ("server = https://x\n", "t.toml:1: value 'https://x' is not a string"),
    ('server = "open\n', "t.toml:1: string is not closed"),
    ("a = 1\na = 2\n", "t.toml:2: 'a' is set twice"),
    ("[agent\n", "t.toml:1: expected a table header"),
    ("just words\n", "t.toml:1: expected `name = value`"),
    ('x = "a" b\n', "unexpected text after the value"),
])
def test_toml_subset_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_toml_subset(text, "t.toml")
