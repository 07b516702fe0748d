"""Gate settings: a TOML file (``--config``), then TELEPOSTURE_GATE_* environment variables, then flags.

The gate holds the collector's PUBLIC key and a gate token (fetch decisions, report back): nothing that
signs, nothing with admin rights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional

import tomllib

from agent import protocol
from agent.policy.validate import parse_duration
from agent.service.transport import ConfigurationError, check_url

ENV_PREFIX = "TELEPOSTURE_GATE_"
LANGUAGES = ("en", "fr", "ar")


class GateSettingsError(ValueError):
    """A setting that cannot be used; the message names it and says what is expected."""


@dataclass(frozen=True)
class GateSettings:
    public_key: str  # the collector's Ed25519 public key, base64 (`teleposture-server gate-token create` prints it)
    collector_url: str = ""  # empty: offline, cached decisions only
    token_file: Optional[Path] = None  # file holding the gate token (tpg_...), mode 0600
    ca_file: Optional[Path] = None  # CA bundle for the collector's TLS certificate
    allow_http: bool = False  # plain http to the collector: development only
    cache_dir: Path = Path("/var/lib/teleposture-gate")
    # Collector unreachable and the cached decision expired: refuse (0), or let a device whose last
    # decision was allow in for this many seconds after that decision expired.
    fail_open: float = 0.0
    recheck_interval: float = 30.0  # connected clients are re-decided this often (disconnect within 60 s)
    timeout: float = 3.0  # per request to the collector
    leeway: float = 30.0  # clock difference tolerated on iat/exp
    language: str = "en"  # for clients that do not send UV_TELEPOSTURE_LANG
    management: str = ""  # OpenVPN management socket: a unix socket path, or host:port
    management_password_file: Optional[Path] = None

    def token(self) -> str:
        if self.token_file is None:
            raise GateSettingsError("token_file: the gate token file is required to ask the collector")
        try:
            return self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GateSettingsError(f"token_file: cannot read {self.token_file}: {exc.strerror}") from exc


_DURATIONS = ("fail_open", "recheck_interval", "timeout", "leeway")
_PATHS = ("token_file", "ca_file", "cache_dir", "management_password_file")


def _coerce(name: str, value: Any) -> Any:
    if name in _DURATIONS:
        if isinstance(value, float) and value >= 0:
            return value
        seconds = parse_duration(value)
        if seconds is None:
            raise GateSettingsError(f"{name}: expected a duration such as 30s, 15m, 8h or 0, found {value!r}")
        return float(seconds)
    if name in _PATHS:
        return None if value in (None, "") else Path(str(value))
    if name == "allow_http":
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("1", "true", "yes", "on")
    return str(value)


def load(config: Optional[Path], overrides: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None
         ) -> GateSettings:
    """Settings from the file, the environment and ``overrides`` (flags; None values ignored), validated."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if config is not None:
        try:
            values.update(tomllib.loads(config.read_text(encoding="utf-8")))
        except OSError as exc:
            raise GateSettingsError(f"cannot read {config}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise GateSettingsError(f"{config}: not valid TOML: {exc}") from exc
    known = {f.name for f in fields(GateSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise GateSettingsError(f"{config}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for name in known:
        if ENV_PREFIX + name.upper() in environ:
            values[name] = environ[ENV_PREFIX + name.upper()]
    values.update({k: v for k, v in overrides.items() if v is not None})
    if not values.get("public_key"):
        raise GateSettingsError("public_key: the collector's public key is required (base64, printed by "
                                "`teleposture-server gate-token create`)")
    settings = GateSettings(**{k: _coerce(k, v) for k, v in values.items()})
    try:
        protocol.load_public_key(settings.public_key)
    except protocol.ProtocolError as exc:
        raise GateSettingsError(f"public_key: {exc}") from exc
    if settings.language not in LANGUAGES:
        raise GateSettingsError(f"language: one of {', '.join(LANGUAGES)}, found {settings.language!r}")
    if settings.collector_url:
        try:
            object.__setattr__(settings, "collector_url", check_url(settings.collector_url, settings.allow_http))
        except ConfigurationError as exc:
            raise GateSettingsError(f"collector_url: {exc}") from exc
    if settings.recheck_interval <= 0 or settings.recheck_interval > 60:
        raise GateSettingsError("recheck_interval: between 1 s and 60 s (a denied device must lose its "
                                f"connection within 60 s), found {settings.recheck_interval:g}")
    return settings
