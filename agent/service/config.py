"""Agent settings: command-line flag > environment variable (TELEPOSTURE_*) > config file > default.

The config file is TOML (keys at the top level or under an ``[agent]`` table), found at ``--config`` /
``TELEPOSTURE_CONFIG``, else at the per-OS default next to the state directory. On Python 3.11+ it is
read with ``tomllib``; on 3.9/3.10 (no tomllib, and the agent takes no extra dependency for this) a
small reader handles the subset the settings need: ``key = value`` lines with strings, integers,
floats and booleans, comments and table headers. A file whose name ends in ``.json`` is read as JSON
on every version.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from agent.probes import current_platform

ENV_PREFIX = "TELEPOSTURE_"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names where it came from and what was expected."""


def default_state_dir(platform: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Path:
    platform = platform or current_platform()
    environ = os.environ if environ is None else environ
    if platform == "darwin":
        return Path("/Library/Application Support/Teleposture")
    if platform == "windows":
        return Path(environ.get("ProgramData", r"C:\ProgramData")) / "Teleposture"
    return Path("/var/lib/teleposture")


def default_config_path(platform: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Path:
    """Where an installer drops the agent's config file when none is named."""
    platform = platform or current_platform()
    if platform == "linux":
        return Path("/etc/teleposture/agent.toml")
    return default_state_dir(platform, environ) / "agent.toml"


# -- value parsing -------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected true or false (1/0, yes/no, on/off)")


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        number = int(value)
    else:
        raise ValueError("expected an integer")
    if number < 0:
        raise ValueError("expected a non-negative integer")
    return number


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError("expected a number") from exc
    if number < 0 or number != number:
        raise ValueError("expected a non-negative number")
    return number


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = _as_str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text
    return convert


@dataclass(frozen=True)
class Option:
    name: str
    convert: Callable[[Any], Any]
    default: Any
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def is_switch(self) -> bool:
        """A boolean setting: a flag without a value on the command line."""
        return self.convert is _as_bool


OPTIONS: Tuple[Option, ...] = (
    Option("state_dir", _as_str, None, "state directory (identity, keys, policy, outbox)"),
    Option("server", _as_str, None, "collector URL (enroll; later runs use the enrolled one)"),
    Option("ca_file", _as_str, None, "PEM bundle of CAs to trust for the collector instead of the system's"),
    Option("allow_http", _as_bool, False, "allow plain http:// collector URLs (development only)"),
    Option("log_format", _choice("text", "json"), "text", "log format: text or json (one JSON object a line)"),
    Option("log_level", _choice("debug", "info", "warning", "error"), "info", "log level"),
    Option("outbox_max_reports", _as_int, 5000, "outbox bound: number of reports kept (oldest dropped)"),
    Option("outbox_max_bytes", _as_int, 50 * 1024 * 1024, "outbox bound: bytes of reports kept (oldest dropped)"),
    Option("upload_batch", _as_int, 50, "reports per upload request"),
    Option("http_timeout", _as_float, 30.0, "seconds to wait for the collector per request"),
    Option("backoff_base", _as_float, 2.0, "first retry delay (s) after a failed upload; doubles per failure"),
    Option("backoff_cap", _as_float, 900.0, "longest delay (s) between upload retries (a Retry-After may be longer)"),
    Option("splay", _as_float, None, "random delay (s) added to each scheduled check; default 10%% of the interval, max 300"),
    Option("check_interval", _as_float, None, "override the policy's check interval (seconds)"),
    Option("upload_interval", _as_float, None, "override the policy's upload interval (seconds)"),
    Option("policy_refresh_interval", _as_float, None, "override the policy's refresh interval (seconds)"),
    Option("vpn_sample_interval", _as_float, None, "override the VPN sampling interval (seconds)"),
    Option("language", _choice("en", "fr", "ar"), None,
           "language of the employee's notifications and `privacy` (default: from the locale)"),
    Option("notify", _as_bool, True, "show desktop notifications to the signed-in user (noncompliance steps)"),
    Option("notify_reminder", _as_float, 14400.0, "seconds between reminders of a step already notified"),
    Option("vpn_profile", _as_str, None, "OpenVPN profile (.ovpn/.conf) whose client certificate identifies this "
                                         "laptop at the VPN gate (`access register-vpn`)"),
)
_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    config_path: Optional[Path]
    server: Optional[str]
    ca_file: Optional[str]
    allow_http: bool
    log_format: str
    log_level: str
    outbox_max_reports: int
    outbox_max_bytes: int
    upload_batch: int
    http_timeout: float
    backoff_base: float
    backoff_cap: float
    splay: Optional[float]
    check_interval: Optional[float]
    upload_interval: Optional[float]
    policy_refresh_interval: Optional[float]
    vpn_sample_interval: Optional[float]
    language: Optional[str]
    notify: bool
    notify_reminder: float
    vpn_profile: Optional[str]
    # where each value came from ("flag", "env TELEPOSTURE_X", "config FILE", "default"), for `status`
    sources: Mapping[str, str]

    def intervals_override(self) -> Dict[str, float]:
        pairs = (("check", self.check_interval), ("upload", self.upload_interval),
                 ("policy_refresh", self.policy_refresh_interval), ("vpn_sample", self.vpn_sample_interval))
        return {name: value for name, value in pairs if value is not None}


# -- config files ----------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


def _parse_basic_string(text: str, where: str) -> Tuple[str, str]:
    """A TOML "basic string" at the start of ``text``; returns (value, rest of the line)."""
    out: List[str] = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == '"':
            return "".join(out), text[i + 1:]
        if char == "\\":
            code = text[i + 1:i + 2]
            if code in _ESCAPES:
                out.append(_ESCAPES[code])
                i += 2
                continue
            if code in ("u", "U"):
                width = 4 if code == "u" else 8
                digits = text[i + 2:i + 2 + width]
                if not re.fullmatch("[0-9A-Fa-f]{" + str(width) + "}", digits):
                    raise ConfigError(f"{where}: bad \\{code} escape in string")
                out.append(chr(int(digits, 16)))
                i += 2 + width
                continue
            raise ConfigError(f"{where}: unknown escape \\{code} in string (use \\\\ for a backslash)")
        out.append(char)
        i += 1
    raise ConfigError(f"{where}: string is not closed on this line")


def _parse_toml_value(text: str, where: str) -> Any:
    text = text.strip()
    if text.startswith('"'):
        value, rest = _parse_basic_string(text, where)
    elif text.startswith("'"):
        end = text.find("'", 1)
        if end < 0:
            raise ConfigError(f"{where}: string is not closed on this line")
        value, rest = text[1:end], text[end + 1:]
    else:
        word = text.partition("#")[0].strip()
        rest = ""
        scalar: Any
        if word in ("true", "false"):
            scalar = word == "true"
        elif re.fullmatch(r"[+-]?\d[\d_]*", word):
            scalar = int(word.replace("_", ""))
        elif re.fullmatch(r"[+-]?\d[\d_]*(\.\d[\d_]*)?([eE][+-]?\d+)?", word):
            scalar = float(word.replace("_", ""))
        else:
            raise ConfigError(f"{where}: value {word!r} is not a string, number or boolean "
                              "(this reader handles only those; quote strings)")
        return scalar
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise ConfigError(f"{where}: unexpected text after the value: {rest[:40]!r}")
    return value


def parse_toml_subset(text: str, source: str) -> Dict[str, Any]:
    """The TOML subset the settings use (for Python < 3.11, which has no tomllib)."""
    root: Dict[str, Any] = {}
    table = root
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"{source}:{number}"
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            match = re.fullmatch(r"\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?", line)
            if not match:
                raise ConfigError(f"{where}: expected a table header like [agent], found {line[:40]!r}")
            table = root
            for part in match.group(1).split("."):
                nested = table.setdefault(part, {})
                if not isinstance(nested, dict):
                    raise ConfigError(f"{where}: {part!r} is already a value, not a table")
                table = nested
            continue
        key, sep, value = line.partition("=")
        key = key.strip().strip('"')
        if not sep or not _BARE_KEY.match(key):
            raise ConfigError(f"{where}: expected `name = value`, found {line[:40]!r}")
        if key in table:
            raise ConfigError(f"{where}: {key!r} is set twice")
        table[key] = _parse_toml_value(value, where)
    return root


def read_config_file(path: Path) -> Dict[str, Any]:
    """The settings in a config file (top level merged with an [agent] table)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: expected a JSON object of settings")
    else:
        try:
            import tomllib  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            data = parse_toml_subset(text, str(path))
        else:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    merged = {key: value for key, value in data.items() if not isinstance(value, dict)}
    agent_table = data.get("agent")
    if isinstance(agent_table, dict):
        merged.update(agent_table)
    unknown = sorted(set(merged) - set(_BY_NAME))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(_BY_NAME))}")
    return merged


def load_settings(flags: Optional[Mapping[str, Any]] = None, environ: Optional[Mapping[str, str]] = None,
                  platform: Optional[str] = None) -> Settings:
    """Resolve every setting. ``flags`` holds command-line values (None = not given), including ``config``."""
    flags = dict(flags or {})
    environ = os.environ if environ is None else environ
    config_flag = flags.get("config")
    config_path: Optional[Path]
    config_required = True
    if config_flag:
        config_path = Path(config_flag)
    elif (ENV_PREFIX + "CONFIG") in environ:
        # An empty TELEPOSTURE_CONFIG means "no config file at all".
        config_path = Path(environ[ENV_PREFIX + "CONFIG"]) if environ[ENV_PREFIX + "CONFIG"] else None
    else:
        config_path = default_config_path(platform, environ)
        config_required = False
    file_values: Dict[str, Any] = {}
    if config_path is not None:
        if config_path.exists() or config_required:
            file_values = read_config_file(config_path)
        else:
            config_path = None

    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    for option in OPTIONS:
        candidates = (
            (flags.get(option.name), "flag --" + option.name.replace("_", "-")),
            (environ.get(option.env), "env " + option.env),
            (file_values.get(option.name), f"config {config_path}"),
        )
        for raw, source in candidates:
            if raw is None:
                continue
            try:
                values[option.name] = option.convert(raw)
            except ValueError as exc:
                raise ConfigError(f"setting {option.name} from {source}: {exc}, found {str(raw)[:60]!r}") from exc
            sources[option.name] = source
            break
        else:
            values[option.name] = option.default
            sources[option.name] = "default"
    state_dir = Path(values["state_dir"]) if values["state_dir"] else default_state_dir(platform, environ)
    values["state_dir"] = state_dir
    for name in ("upload_batch", "outbox_max_reports"):
        if values[name] < 1:
            raise ConfigError(f"setting {name} ({sources[name]}) must be at least 1")
    if values["backoff_base"] < 0.05:
        raise ConfigError(f"setting backoff_base ({sources['backoff_base']}) must be at least 0.05 seconds")
    return Settings(config_path=config_path, sources=sources, **values)
