"""Gate settings: flags > TELEPOSTURE_GATE_* environment variables > a TOML file (``--config``) > defaults.

The file holds the names below at the top level or in a ``[gate]`` table; reading, precedence and the
duration grammar are the shared loader's (common.settings).

The gate holds the collector's PUBLIC key and a gate token (fetch decisions, report back): nothing that
signs, nothing with admin rights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from agent import protocol
from agent.service.transport import ConfigurationError, check_url
from common.settings import Option, SettingsError, as_bool, as_duration, as_path, as_str, choice
from common.settings import load as load_options

ENV_PREFIX = "TELEPOSTURE_GATE_"
TABLE = "gate"
LANGUAGES = ("en", "fr", "ar")

# The gate's name for the shared loader's error (its commands catch it and exit 2).
GateSettingsError = SettingsError


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


# Defaults are GateSettings' own: an option left unset is not passed to it.
OPTIONS = tuple(Option(name, convert, env_prefix=ENV_PREFIX) for name, convert in (
    ("public_key", as_str), ("collector_url", as_str), ("token_file", as_path), ("ca_file", as_path),
    ("allow_http", as_bool), ("cache_dir", as_path), ("fail_open", as_duration), ("recheck_interval", as_duration),
    ("timeout", as_duration), ("leeway", as_duration), ("language", choice(*LANGUAGES)), ("management", as_str),
    ("management_password_file", as_path),
))


def load(config: Optional[Path], overrides: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None
         ) -> GateSettings:
    """Settings from flags (``overrides``; None values ignored), the environment and the file, validated.

    ``config`` is --config; without it TELEPOSTURE_GATE_CONFIG names the file; there is no default file.
    """
    environ = os.environ if environ is None else environ
    loaded = load_options(OPTIONS, TABLE, overrides, environ, config=config, config_env=ENV_PREFIX + "CONFIG")
    # An empty cache_dir means the default one, not none.
    given = {name: value for name, value in loaded.values.items()
             if loaded.sources[name] != "default" and not (name == "cache_dir" and value is None)}
    if not given.get("public_key"):
        raise GateSettingsError("public_key: the collector's public key is required (base64, printed by "
                                "`teleposture-server gate-token create`)")
    settings = GateSettings(**given)
    try:
        protocol.load_public_key(settings.public_key)
    except protocol.ProtocolError as exc:
        raise GateSettingsError(f"public_key: {exc}") from exc
    if settings.collector_url:
        try:
            object.__setattr__(settings, "collector_url", check_url(settings.collector_url, settings.allow_http))
        except ConfigurationError as exc:
            raise GateSettingsError(f"collector_url: {exc}") from exc
    if settings.recheck_interval <= 0 or settings.recheck_interval > 60:
        raise GateSettingsError("recheck_interval: between 1 s and 60 s (a denied device must lose its "
                                f"connection within 60 s), found {settings.recheck_interval:g}")
    return settings
