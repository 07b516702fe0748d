"""Settings of the agent, the collector and the gate: flag > environment variable > config file > default.

Each component declares its options (name, converter, default, help) and calls :func:`load`. This
module owns everything the three share: where the config file is, reading it (TOML through
``tomllib``, ``tomli`` before Python 3.11; JSON when the name ends in ``.json``), which keys and
tables it may hold (an unknown one is refused, never dropped), the precedence, converting text from
the environment and flags to typed values, and the one duration grammar (also used by policies).

It lives outside ``agent/``, ``server/`` and ``gate/`` because all three import it and the collector
may import nothing of the agent but its protocol, policy and check declarations
(docs/architecture.md). It must stay importable on the agent's oldest Python (3.9).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Union

ENV_PREFIX = "TELEPOSTURE_"


class SettingsError(ValueError):
    """A setting or config file that cannot be used; the message says where, what was expected and what was found."""


# -- durations ------------------------------------------------------------------------------------

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Seconds as a plain number, or a number with one unit: the union of what agent intervals (plain
# seconds), collector settings (90, 15m, 7d) and policies (72h, 2w) accepted before they shared it.
DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([smhdw]?)\s*$")
DURATION_EXAMPLES = "90, 90s, 1.5m, 15m, 12h, 7d or 2w"


def duration_seconds(value: Any, positive: bool = False) -> float:
    """Seconds from a duration: a number of seconds (90, 2.5, "90") or a number with a unit s, m, h, d or w.

    Raises ValueError saying what was expected (the caller adds where the value came from).
    """
    seconds: Optional[float] = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = DURATION_PATTERN.match(value)
        if match:
            seconds = float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    if seconds is None or not math.isfinite(seconds):
        raise ValueError(f"expected a duration such as {DURATION_EXAMPLES}")
    if seconds < 0 or (positive and seconds == 0):
        raise ValueError(f"expected a duration {'above' if positive else 'of at least'} 0 such as {DURATION_EXAMPLES}")
    return seconds


def parse_duration(value: Any, name: str = "duration", positive: bool = False) -> float:
    """:func:`duration_seconds` with a SettingsError naming ``name`` and the value found."""
    try:
        return duration_seconds(value, positive)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}, found {value!r}") from exc


# -- converters: value from a flag, the environment (text) or a config file -> typed value ---------

Converter = Callable[[Any], Any]
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected true or false (1/0, yes/no, on/off)")


def as_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        number = int(value)
    else:
        raise ValueError("expected an integer")
    if number < 0:
        raise ValueError("expected a non-negative integer")
    return number


def as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected a number")
    try:
        number = float(value)
    except ValueError as exc:
        raise ValueError("expected a number") from exc
    if not math.isfinite(number) or number < 0:
        raise ValueError("expected a non-negative number")
    return number


def as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string (quote it in the config file)")
    return value


def as_path(value: Any) -> Optional[Path]:
    """A file or directory; an empty string means none."""
    if isinstance(value, Path):
        return value
    return Path(as_str(value)) if as_str(value) else None


def as_duration(value: Any) -> float:
    return duration_seconds(value)


def as_positive_duration(value: Any) -> float:
    return duration_seconds(value, positive=True)


def as_str_list(value: Any) -> list:
    """A list of strings; in the environment or on the command line, comma-separated."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ValueError("expected a list of strings (comma-separated in the environment)")


def choice(*choices: str) -> Converter:
    def convert(value: Any) -> str:
        text = as_str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text
    return convert


@dataclass(frozen=True)
class Option:
    """One setting: config-file key ``name``, flag ``--name-with-dashes``, environment ``<prefix>NAME``."""

    name: str
    convert: Converter
    default: Any = None
    help: str = ""
    env_prefix: str = ENV_PREFIX

    @property
    def env(self) -> str:
        return self.env_prefix + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def metavar(self) -> str:
        """What the flag's value is, for --help."""
        kinds: Dict[Converter, str] = {as_duration: "DURATION", as_positive_duration: "DURATION", as_int: "N"}
        return kinds.get(self.convert, self.name.upper())

    @property
    def is_switch(self) -> bool:
        """A boolean setting: a flag without a value on the command line."""
        return self.convert is as_bool


# -- config files ---------------------------------------------------------------------------------

def _toml() -> ModuleType:
    # Imported when a file is read, not with the module: the agent reads its file once at start.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9/3.10 (the `tomli` dependency of pyproject.toml)
        import tomli as tomllib
    return tomllib


def locate_config(flag: Union[str, Path, None], environ: Mapping[str, str], env_name: str,
                  default: Optional[Path] = None) -> Optional[Path]:
    """The config file to read: the flag's, else the environment's (empty: none), else ``default`` if it exists.

    A named file must exist (reading it fails otherwise); the default one is optional.
    """
    if flag:
        return Path(flag)
    if env_name in environ:
        return Path(environ[env_name]) if environ[env_name] else None
    if default is not None and default.exists():
        return default
    return None


def _parse_file(path: Path) -> Dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SettingsError(f"config file {path} is not UTF-8 text") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SettingsError(f"config file {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"config file {path}: expected a JSON object of settings, found {type(data).__name__}")
        return data
    tomllib = _toml()
    try:
        parsed: Dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends with "(at line L, column C)"
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
    return parsed


def _unknown(path: Path, where: str, key: str, is_table: bool, table: str, known: Sequence[str]) -> SettingsError:
    import difflib  # only a refusal needs it; every start of the agent would pay for it otherwise

    candidates = [*known, table] if where == "at the top level" else list(known)
    close = difflib.get_close_matches(key, candidates, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    what = f"unknown table [{key}]" if is_table else f"unknown setting {key!r}"
    return SettingsError(f"config file {path}, {where}: {what}{hint}; known settings: {', '.join(known)} "
                         f"(at the top level or in the [{table}] table)")


def read_config_file(path: Path, table: str, known: Iterable[str]) -> Dict[str, Any]:
    """The settings in a config file: its top-level keys and those of its ``[table]``.

    Anything else (another table, a misspelt key, a key set both at the top level and in the table) is
    refused with the file, the table and the key named, and the known keys listed.
    """
    names = sorted(known)
    data = _parse_file(path)
    values: Dict[str, Any] = {}
    section = data.get(table, {})
    if not isinstance(section, dict):
        raise SettingsError(f"config file {path}: {table!r} must be a table [{table}] of settings, found {section!r}")
    for key, value in data.items():
        if key == table:
            continue
        if key not in names:
            raise _unknown(path, "at the top level", key, isinstance(value, dict), table, names)
        values[key] = value
    for key, value in section.items():
        if key not in names:
            raise _unknown(path, f"table [{table}]", f"{table}.{key}" if isinstance(value, dict) else key,
                           isinstance(value, dict), table, names)
        if key in values:
            raise SettingsError(f"config file {path}: {key!r} is set both at the top level and in [{table}]; "
                                "keep one")
        values[key] = value
    return values


# -- precedence -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Loaded:
    values: Dict[str, Any]  # every option's typed value
    # where each came from: "flag --x", "env TELEPOSTURE_X", "config FILE" or "default"
    sources: Dict[str, str]
    config_path: Optional[Path]  # the file read, None when none was


def _shown(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else text[:77] + "..."


def load(options: Sequence[Option], table: str, flags: Optional[Mapping[str, Any]] = None,
         environ: Optional[Mapping[str, str]] = None, config: Union[str, Path, None] = None,
         config_env: str = ENV_PREFIX + "CONFIG", default_config: Optional[Path] = None) -> Loaded:
    """Every option from its flag (None: not given), environment variable (empty: not set), config file or default.

    ``config`` is the --config flag; without it ``config_env`` names the file, else ``default_config``
    is read when it exists.
    """
    flags = flags or {}
    environ = os.environ if environ is None else environ
    names = sorted(option.name for option in options)
    unknown = sorted(set(flags) - set(names))
    if unknown:  # a caller's mistake, refused like a misspelt key rather than ignored
        raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; known settings: {', '.join(names)}")
    path = locate_config(config, environ, config_env, default_config)
    from_file = read_config_file(path, table, names) if path is not None else {}
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    for option in options:
        candidates = (
            (flags.get(option.name), f"flag {option.flag}"),
            (environ.get(option.env) or None, f"env {option.env}"),
            (from_file.get(option.name), f"config {path}"),
        )
        for raw, source in candidates:
            if raw is None:
                continue
            try:
                values[option.name] = option.convert(raw)
            except ValueError as exc:
                raise SettingsError(f"setting {option.name} from {source}: {exc}, found {_shown(raw)}") from exc
            sources[option.name] = source
            break
        else:
            values[option.name] = option.default
            sources[option.name] = "default"
    return Loaded(values, sources, path)
