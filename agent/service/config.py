"""Agent settings: command-line flag > environment variable (TELEPOSTURE_*) > config file > default.

The config file is TOML (keys at the top level or under an ``[agent]`` table; JSON when its name ends
in ``.json``), found at ``--config`` / ``TELEPOSTURE_CONFIG`` (empty: no file), else at the per-OS
default when it exists. Reading, precedence, unknown-key refusal and the duration grammar are the
shared loader's (common.settings); this module declares the agent's options and their defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from agent.probes import current_platform
from common.settings import (
    Option,
    SettingsError,
    as_bool,
    as_duration,
    as_int,
    as_str,
    choice,
    load,
)

# The agent's name for the shared loader's error (its commands catch it and exit 2).
ConfigError = SettingsError
TABLE = "agent"


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


OPTIONS: Tuple[Option, ...] = (
    Option("state_dir", as_str, None, "state directory (identity, keys, policy, outbox)"),
    Option("server", as_str, None, "collector URL (enroll; later runs use the enrolled one)"),
    Option("ca_file", as_str, None, "PEM bundle of CAs to trust for the collector instead of the system's"),
    Option("allow_http", as_bool, False, "allow plain http:// collector URLs (development only)"),
    Option("log_format", choice("text", "json"), "text", "log format: text or json (one JSON object a line)"),
    Option("log_level", choice("debug", "info", "warning", "error"), "info", "log level"),
    Option("outbox_max_reports", as_int, 5000, "outbox bound: number of reports kept (oldest dropped)"),
    Option("outbox_max_bytes", as_int, 50 * 1024 * 1024, "outbox bound: bytes of reports kept (oldest dropped)"),
    Option("upload_batch", as_int, 50, "reports per upload request"),
    Option("http_timeout", as_duration, 30.0, "time to wait for the collector per request (seconds, or 30s, 1m)"),
    Option("backoff_base", as_duration, 2.0, "first retry delay after a failed upload (seconds, or 2s); "
                                              "doubles per failure"),
    Option("backoff_cap", as_duration, 900.0, "longest delay between upload retries (seconds, or 15m; a Retry-After "
                                               "may be longer)"),
    Option("splay", as_duration, None, "random delay added to each scheduled check (seconds, or 2m); default 10%% "
                                      "of the interval, at most 300 s"),
    Option("check_interval", as_duration, None, "override the policy's check interval (seconds, or 5m, 1h)"),
    Option("upload_interval", as_duration, None, "override the policy's upload interval (seconds, or 15m)"),
    Option("policy_refresh_interval", as_duration, None, "override the policy's refresh interval (seconds, or 1h)"),
    Option("vpn_sample_interval", as_duration, None, "override the VPN sampling interval (seconds, or 5m)"),
    Option("language", choice("en", "fr", "ar"), None,
           "language of the employee's notifications and `privacy` (default: from the locale)"),
    Option("notify", as_bool, True, "show desktop notifications to the signed-in user (noncompliance steps)"),
    Option("notify_reminder", as_duration, 14400.0, "time between reminders of a step already notified "
                                                    "(seconds, or 4h)"),
    Option("vpn_profile", as_str, None, "OpenVPN profile (.ovpn/.conf) whose client certificate identifies this "
                                         "laptop at the VPN gate (`access register-vpn`)"),
)


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


def load_settings(flags: Optional[Mapping[str, Any]] = None, environ: Optional[Mapping[str, str]] = None,
                  platform: Optional[str] = None) -> Settings:
    """Resolve every setting. ``flags`` holds command-line values (None = not given), including ``config``."""
    flags = dict(flags or {})
    environ = os.environ if environ is None else environ
    config = flags.pop("config", None)
    loaded = load(OPTIONS, TABLE, flags, environ, config=config,
                  default_config=default_config_path(platform, environ))
    values, sources = dict(loaded.values), loaded.sources
    values["state_dir"] = Path(values["state_dir"]) if values["state_dir"] else default_state_dir(platform, environ)
    for name in ("upload_batch", "outbox_max_reports"):
        if values[name] < 1:
            raise ConfigError(f"setting {name} ({sources[name]}) must be at least 1")
    if values["backoff_base"] < 0.05:
        raise ConfigError(f"setting backoff_base ({sources['backoff_base']}) must be at least 0.05 seconds")
    return Settings(config_path=loaded.config_path, sources=sources, **values)
