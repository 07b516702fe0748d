"""The shared settings loader: precedence, config files, unknown keys, types and the duration grammar.

Also that the agent, the collector and the gate all go through it (the same refusals everywhere).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytest

from agent import protocol
from agent.policy.validate import parse_duration as policy_duration
from agent.service.config import load_settings as load_agent
from common.settings import (
    Option,
    SettingsError,
    as_bool,
    as_duration,
    as_float,
    as_int,
    as_path,
    as_positive_duration,
    as_str,
    as_str_list,
    choice,
    duration_seconds,
    load,
    parse_duration,
)
from gate.settings import load as load_gate
from server.settings import load_settings as load_collector

OPTIONS = (
    Option("port", as_int, 8000),
    Option("timeout", as_duration, 30.0),
    Option("name", as_str, None),
    Option("debug", as_bool, False),
)


def _write(tmp_path: Path, text: str, name: str = "app.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- precedence: flag > environment > file > default ----------------------------------------------

@pytest.mark.parametrize("flag, env, in_file, expected, source", [
    (9000, "9100", "9200", 9000, "flag --port"),
    (None, "9100", "9200", 9100, "env TELEPOSTURE_PORT"),
    (None, None, "9200", 9200, "config"),
    (None, None, None, 8000, "default"),
    (None, "", "9200", 9200, "config"),  # an empty variable is not set
    (None, "", None, 8000, "default"),
], ids=["flag", "env", "file", "default", "empty-env-falls-to-file", "empty-env-falls-to-default"])
def test_precedence(tmp_path: Path, flag: Optional[int], env: Optional[str], in_file: Optional[str],
                    expected: int, source: str) -> None:
    config = _write(tmp_path, f"[app]\nport = {in_file}\n" if in_file else "")
    environ = {} if env is None else {"TELEPOSTURE_PORT": env}
    loaded = load(OPTIONS, "app", {"port": flag}, environ, config=config)
    assert loaded.values["port"] == expected
    assert loaded.sources["port"].startswith(source)
    assert loaded.config_path == config


@pytest.mark.parametrize("flag, environ, default_exists, expected", [
    ("named.toml", {"TELEPOSTURE_CONFIG": "env.toml"}, True, "named.toml"),
    (None, {"TELEPOSTURE_CONFIG": "env.toml"}, True, "env.toml"),
    (None, {"TELEPOSTURE_CONFIG": ""}, True, None),
    (None, {}, True, "default.toml"),
    (None, {}, False, None),
], ids=["flag", "env", "empty-env-means-none", "default-when-present", "no-default-no-file"])
def test_which_config_file(tmp_path: Path, flag: Optional[str], environ: Dict[str, str], default_exists: bool,
                           expected: Optional[str]) -> None:
    for name in ("named.toml", "env.toml"):
        _write(tmp_path, "port = 1\n", name)
    if default_exists:
        _write(tmp_path, "port = 2\n", "default.toml")
    environ = {k: str(tmp_path / v) if v else v for k, v in environ.items()}
    loaded = load(OPTIONS, "app", {}, environ, config=tmp_path / flag if flag else None,
                  default_config=tmp_path / "default.toml")
    assert loaded.config_path == (tmp_path / expected if expected else None)


def test_a_named_file_must_exist_a_default_one_need_not(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"cannot read config file .*missing.toml"):
        load(OPTIONS, "app", {}, {}, config=tmp_path / "missing.toml")
    assert load(OPTIONS, "app", {}, {}, default_config=tmp_path / "missing.toml").config_path is None


# -- what a file may hold ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("prot = 1\n", r"app.toml, at the top level: unknown setting 'prot' \(did you mean 'port'\?\); "
                   r"known settings: debug, name, port, timeout \(at the top level or in the \[app\] table\)"),
    ("[app]\nport = 1\ntimeot = 3\n", r"app.toml, table \[app\]: unknown setting 'timeot' \(did you mean 'timeout'\?\)"),
    ("[ap]\nport = 1\n", r"app.toml, at the top level: unknown table \[ap\] \(did you mean 'app'\?\)"),
    ("[app.nested]\nport = 1\n", r"table \[app\]: unknown table \[app.nested\]; known settings: debug, name"),
    ("zzz = 1\n", r"unknown setting 'zzz'; known settings"),  # nothing close: no guess
    ("port = 1\n[app]\nport = 2\n", r"'port' is set both at the top level and in \[app\]; keep one"),
    ("app = 3\n", r"'app' must be a table \[app\] of settings, found 3"),
], ids=["top-level-typo", "table-typo", "unknown-table", "nested-table", "no-suggestion", "twice", "table-not-table"])
def test_a_file_holds_known_keys_only(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load(OPTIONS, "app", {}, {}, config=_write(tmp_path, text))


def test_top_level_and_table_keys_merge(tmp_path: Path) -> None:
    loaded = load(OPTIONS, "app", {}, {}, config=_write(tmp_path, 'name = "x"\n[app]\nport = 5\n'))
    assert (loaded.values["name"], loaded.values["port"]) == ("x", 5)


@pytest.mark.parametrize("text, line", [
    ("port = 1\nname = \"open\n", 2),
    ("[app]\nport = 1\ntimeout = 3s\n", 3),
    ("port = 1\nport = 2\n", 2),
    ("[app\n", 1),
], ids=["unclosed-string", "bare-word", "duplicate-key", "bad-header"])
def test_toml_syntax_error_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    with pytest.raises(SettingsError, match=rf"config file .*app.toml is not valid TOML: .*\(at line {line},"):
        load(OPTIONS, "app", {}, {}, config=_write(tmp_path, text))


@pytest.mark.parametrize("text, message", [
    ('{"port": 7, "app": {"debug": true}}', None),
    ('{"port": ', "is not valid JSON: .*line 1 column"),
    ("[1, 2]", "expected a JSON object of settings, found list"),
    ('{"prot": 7}', "unknown setting 'prot'"),
], ids=["ok", "syntax", "not-an-object", "unknown"])
def test_json_files(tmp_path: Path, text: str, message: Optional[str]) -> None:
    config = _write(tmp_path, text, "app.json")
    if message is None:
        loaded = load(OPTIONS, "app", {}, {}, config=config)
        assert (loaded.values["port"], loaded.values["debug"]) == (7, True)
    else:
        with pytest.raises(SettingsError, match=message):
            load(OPTIONS, "app", {}, {}, config=config)


def test_a_non_utf8_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "app.toml"
    config.write_bytes(b'name = "\xff"\n')
    with pytest.raises(SettingsError, match="is not UTF-8 text"):
        load(OPTIONS, "app", {}, {}, config=config)


def test_unknown_flag_names_are_refused() -> None:
    with pytest.raises(SettingsError, match="unknown setting.*porrt; known settings: debug, name, port, timeout"):
        load(OPTIONS, "app", {"porrt": 1}, {})


# -- types ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("convert, raw, expected", [
    (as_bool, True, True), (as_bool, "yes", True), (as_bool, " On ", True), (as_bool, "0", False),
    (as_bool, "off", False),
    (as_int, 7, 7), (as_int, " 42 ", 42), (as_int, "+3", 3),
    (as_float, 2.5, 2.5), (as_float, "0.25", 0.25), (as_float, 3, 3.0),
    (as_str, "x", "x"),
    (as_path, "/a/b", Path("/a/b")), (as_path, "", None), (as_path, Path("c"), Path("c")),
    (as_str_list, "10.0.0.0/8, 127.0.0.1", ["10.0.0.0/8", "127.0.0.1"]), (as_str_list, ["a"], ["a"]),
    (as_str_list, "", []),
    (choice("text", "json"), "JSON", "json"),
])
def test_converters_accept(convert: Callable[[Any], Any], raw: Any, expected: Any) -> None:
    assert convert(raw) == expected


@pytest.mark.parametrize("convert, raw, message", [
    (as_bool, "perhaps", "expected true or false"), (as_bool, 1, "expected true or false"),
    (as_bool, "", "expected true or false"),
    (as_int, "many", "expected an integer"), (as_int, True, "expected an integer"), (as_int, 1.5, "expected an integer"),
    (as_int, "-1", "expected a non-negative integer"),
    (as_float, "nan", "expected a non-negative number"), (as_float, "inf", "expected a non-negative number"),
    (as_float, -1, "expected a non-negative number"), (as_float, "x", "expected a number"),
    (as_float, [1], "expected a number"), (as_float, False, "expected a number"),
    (as_str, 5, "expected a string"), (as_path, 5, "expected a string"),
    (as_str_list, [1, 2], "expected a list of strings"), (as_str_list, 3, "expected a list of strings"),
    (choice("text", "json"), "xml", "expected one of text, json"),
])
def test_converters_refuse(convert: Callable[[Any], Any], raw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        convert(raw)


@pytest.mark.parametrize("flags, environ, text, message", [
    ({}, {"TELEPOSTURE_PORT": "many"}, "", r"setting port from env TELEPOSTURE_PORT: expected an integer, "
                                           r"found 'many'"),
    ({}, {}, 'port = "many"\n', r"setting port from config .*app.toml: expected an integer, found 'many'"),
    ({}, {}, "name = 5\n", r"setting name from config .*: expected a string \(quote it in the config file\), found 5"),
    ({}, {}, "[app]\ndebug = 2\n", r"setting debug from config .*: expected true or false .*found 2"),
    ({"timeout": "soon"}, {}, "", r"setting timeout from flag --timeout: expected a duration such as 90, 90s"),
    ({}, {}, "timeout = [1, 2]\n", r"setting timeout from config .*: expected a duration .*found \[1, 2\]"),
], ids=["env-int", "file-int", "file-str", "file-bool", "flag-duration", "file-list"])
def test_wrong_types_name_setting_source_expected_and_found(tmp_path: Path, flags: Dict[str, Any],
                                                            environ: Dict[str, str], text: str,
                                                            message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load(OPTIONS, "app", flags, environ, config=_write(tmp_path, text))


# -- durations -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, seconds", [
    (90, 90.0), (2.5, 2.5), (0, 0.0), ("90", 90.0), ("0.5", 0.5), (".5", 0.5), ("90s", 90.0), ("15m", 900.0),
    ("1.5m", 90.0), ("12h", 43200.0), ("1.5h", 5400.0), ("7d", 604800.0), ("2w", 1209600.0), (" 3 d ", 259200.0),
    ("0h", 0.0),
])
def test_duration_grammar(raw: Any, seconds: float) -> None:
    assert duration_seconds(raw) == seconds
    assert as_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["soon", "", "15 minutes", "1h30m", "-5", "5ms", "1e3", "inf", "nan", "15M", True,
                                 None, [1], float("inf"), -1])
def test_duration_grammar_refuses(raw: Any) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        duration_seconds(raw)


def test_positive_durations_refuse_zero() -> None:
    with pytest.raises(ValueError, match="expected a duration above 0"):
        as_positive_duration("0s")
    with pytest.raises(SettingsError, match=r"--expires: expected a duration above 0 .*found 0"):
        parse_duration(0, "--expires", positive=True)
    assert parse_duration("7d", "--expires", positive=True) == 604800.0


@pytest.mark.parametrize("raw, seconds", [
    ("72h", 259200), ("7d", 604800), (90, 90), ("90", 90), ("1.5h", 5400), ("0h", 0), (2.0, 2),
    ("0.5s", None), ("soon", None), (True, None), (-1, None),
])
def test_policies_use_the_same_grammar_in_whole_seconds(raw: Any, seconds: Optional[int]) -> None:
    assert policy_duration(raw) == seconds


# -- every component goes through the loader -----------------------------------------------------------

GATE_KEY = protocol.public_key_b64(protocol.generate_private_key())


def _agent(config: Path, environ: Dict[str, str]) -> Any:
    return load_agent({"config": str(config)}, environ=environ)


def _collector(config: Path, environ: Dict[str, str]) -> Any:
    return load_collector({"data_dir": config.parent}, environ=environ, config_file=config)


def _gate(config: Path, environ: Dict[str, str]) -> Any:
    return load_gate(config, {"public_key": GATE_KEY}, environ=environ)


COMPONENTS = [
    pytest.param(_agent, "agent", "http_timeout", "TELEPOSTURE_HTTP_TIMEOUT", "http_timeout", id="agent"),
    pytest.param(_collector, "collector", "stale_after", "TELEPOSTURE_STALE_AFTER", "stale_after", id="collector"),
    pytest.param(_gate, "gate", "timeout", "TELEPOSTURE_GATE_TIMEOUT", "timeout", id="gate"),
]


@pytest.mark.parametrize("loader, table, key, env, attribute", COMPONENTS)
def test_each_component_refuses_unknown_keys_at_top_level_and_in_its_table(
        tmp_path: Path, loader: Callable[[Path, Dict[str, str]], Any], table: str, key: str, env: str,
        attribute: str) -> None:
    # A [table] beside a misspelt top-level key: the key used to be dropped silently by the collector.
    config = _write(tmp_path, f'{key}x = "1m"\n[{table}]\n{key} = "2m"\n', f"{table}.toml")
    with pytest.raises(SettingsError, match=rf"{table}.toml, at the top level: unknown setting '{key}x' "
                                            rf"\(did you mean '{key}'\?\)"):
        loader(config, {})
    config.write_text(f'[{table}]\n{key}s = "2m"\n')
    with pytest.raises(SettingsError, match=rf"table \[{table}\]: unknown setting '{key}s'.*known settings: "):
        loader(config, {})
    config.write_text(f'[{table}s]\n{key} = "2m"\n')
    with pytest.raises(SettingsError, match=rf"unknown table \[{table}s\] \(did you mean '{table}'\?\)"):
        loader(config, {})


@pytest.mark.parametrize("loader, table, key, env, attribute", COMPONENTS)
def test_each_component_reads_durations_from_file_and_environment(
        tmp_path: Path, loader: Callable[[Path, Dict[str, str]], Any], table: str, key: str, env: str,
        attribute: str) -> None:
    config = _write(tmp_path, f'[{table}]\n{key} = "2m"\n', f"{table}.toml")
    assert getattr(loader(config, {}), attribute) == 120.0
    assert getattr(loader(config, {env: "1.5"}), attribute) == 1.5
    assert getattr(loader(config, {env: "1h"}), attribute) == 3600.0
    with pytest.raises(SettingsError, match=rf"{key} from env {env}: expected a duration"):
        loader(config, {env: "an hour"})
    config.write_text(f"{key} = \n")
    with pytest.raises(SettingsError, match=r"is not valid TOML: .*\(at line 1,"):
        loader(config, {})


@pytest.mark.parametrize("option, flag, env, metavar, switch", [
    (Option("check_interval", as_duration), "--check-interval", "TELEPOSTURE_CHECK_INTERVAL", "DURATION", False),
    (Option("upload_batch", as_int), "--upload-batch", "TELEPOSTURE_UPLOAD_BATCH", "N", False),
    (Option("allow_http", as_bool), "--allow-http", "TELEPOSTURE_ALLOW_HTTP", "ALLOW_HTTP", True),
    (Option("timeout", as_duration, env_prefix="TELEPOSTURE_GATE_"), "--timeout", "TELEPOSTURE_GATE_TIMEOUT",
     "DURATION", False),
])
def test_option_names_its_flag_variable_and_metavar(option: Option, flag: str, env: str, metavar: str,
                                                    switch: bool) -> None:
    assert (option.flag, option.env, option.metavar, option.is_switch) == (flag, env, metavar, switch)


def test_the_collector_reads_top_level_keys_beside_its_table(tmp_path: Path) -> None:
    # Before the shared loader, a [collector] table made every top-level key vanish without a word.
    config = _write(tmp_path, 'port = 9000\n[collector]\nstale_after = "3d"\n', "collector.toml")
    settings = _collector(config, {})
    assert (settings.port, settings.stale_after) == (9000, 3 * 86400.0)


def test_the_gate_reads_its_file_from_the_environment_and_a_gate_table(tmp_path: Path) -> None:
    config = _write(tmp_path, f'public_key = "{GATE_KEY}"\n[gate]\nfail_open = "4h"\nlanguage = "FR"\n', "gate.toml")
    settings = load_gate(None, {}, environ={"TELEPOSTURE_GATE_CONFIG": str(config)})
    assert (settings.fail_open, settings.language, settings.public_key) == (14400.0, "fr", GATE_KEY)
    assert load_gate(None, {"public_key": GATE_KEY}, environ={"TELEPOSTURE_GATE_CONFIG": ""}).fail_open == 0.0
