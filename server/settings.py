"""Collector settings: typed, validated at start, from (lowest to highest precedence) defaults, a TOML
config file, TELEPOSTURE_* environment variables and command-line flags.

The config file is ``--config``/``TELEPOSTURE_CONFIG`` (empty: none), else ``<data dir>/collector.toml``
when it exists. Keys are the field names below (``max_body_bytes = 4194304``, ``stale_after = "2d"``), at
the top level or in a ``[collector]`` table; an unknown key is refused. Environment variables are the
same names upper-cased with the TELEPOSTURE_ prefix (TELEPOSTURE_STALE_AFTER=2d). Reading, precedence and
the duration grammar are the shared loader's (common.settings); the model below adds ranges and checks.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common import settings as loader
from common.settings import SettingsError

SERVER_KEY_FILE = "server_signing_key.pem"
CONFIG_FILE = "collector.toml"
TABLE = "collector"
# Database passwords that ship in examples and images; never acceptable on a real deployment.
DEFAULT_DB_PASSWORDS = frozenset({"postgres", "password", "changeme", "teleposture", "secret", "admin"})


def parse_duration(value: Any, name: str = "duration") -> float:
    """A duration in the shared grammar (90, 15m, 12h, 7d); above zero, as every lifetime and period here is."""
    return loader.parse_duration(value, name, positive=True)


# Fields holding a duration in seconds: 90, "15m", "7d" in the file and the environment.
DURATION_FIELDS = ("stale_after", "report_retention", "raw_report_interval", "maintenance_interval",
                   "actions_interval", "delivery_backoff_max", "event_dead_after", "delivery_lease",
                   "access_stale_limit", "decision_lifetime", "device_cert_lifetime",
                   "history_retention", "rollup_retention", "event_retention", "dead_letter_retention")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Path("./var")
    database_url: Optional[str] = None  # default: SQLite file teleposture.db in data_dir
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    # Development mode turns the insecure-setting refusals of `serve` into warnings.
    development: bool = False
    tls_certfile: Optional[Path] = None
    tls_keyfile: Optional[Path] = None
    # Set when a reverse proxy in front terminates TLS (then a non-loopback bind is allowed without certs).
    behind_tls_proxy: bool = False
    # Proxies whose X-Forwarded-For is believed (client addresses for rate limits and the audit log).
    trusted_proxies: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_decompressed_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_batch: int = Field(default=500, ge=1, le=10000)
    # Token buckets: requests per minute with bursts of the same size; 0 disables a limit.
    rate_limit_device_per_minute: int = Field(default=120, ge=0)
    rate_limit_ip_per_minute: int = Field(default=12000, ge=0)
    stale_after: float = 2 * 86400.0
    # Access decisions (docs/access.md): a device silent for longer is denied; signed decisions live this long.
    access_stale_limit: float = 3 * 86400.0
    decision_lifetime: float = 900.0
    device_cert_lifetime: float = 7 * 86400.0  # device TLS certificates (server/device_ca.py)
    report_retention: float = 30 * 86400.0
    # Status-change history (transitions) and daily trend rollups; see server/store/retention.py.
    history_retention: float = 365 * 86400.0
    rollup_retention: float = 400 * 86400.0
    # The events outbox: events older than this are deleted with their delivery rows, except an event
    # still pending for an enabled sink (never) or a dead letter, kept dead_letter_retention after its
    # last failed attempt so it can still be retried (server.actions.delivery.prune_outbox).
    event_retention: float = 90 * 86400.0
    dead_letter_retention: float = 30 * 86400.0
    retention_batch: int = Field(default=5000, ge=1, le=1_000_000)
    # An unchanged report's raw copy at most this often (first reports and changes are always kept):
    # hourly copies cost ~140 KB/device/day, weekly ones keep storage under 2 KB/device/day
    # (benchmarks/storage_growth.py, docs/collector.md "Storage").
    raw_report_interval: float = 7 * 86400.0
    policy_cache_seconds: float = Field(default=5.0, ge=0)
    maintenance_interval: float = 600.0
    # Fleets larger than this (active + revoked devices in the viewer's scope) get the overview's counts
    # from the snapshot job (at most ~maintenance_interval old, the page says when) instead of live.
    overview_live_limit: int = Field(default=50_000, ge=0)
    # server.actions: how often due ladder steps and the outbox are looked at, retry backoff ceiling, and
    # how long an undelivered event is retried before it goes to the dead-letter list (docs/actions.md).
    actions_interval: float = 2.0
    delivery_backoff_max: float = 300.0
    event_dead_after: float = 3 * 86400.0
    delivery_lease: float = 60.0  # a claimed delivery of a killed process is retried after this
    log_level: str = "info"
    access_log: bool = True
    # Prometheus metrics: GET /metrics with "Authorization: Bearer <metrics_token>", and/or a separate
    # plain listener on metrics_address ("127.0.0.1:9464") that only the monitoring network reaches.
    metrics_token: Optional[str] = Field(default=None, min_length=16)
    metrics_address: Optional[str] = None

    @field_validator(*DURATION_FIELDS, mode="before")
    @classmethod
    def _durations(cls, value: Any, info: Any) -> float:
        return parse_duration(value, info.field_name)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> list[str]:
        try:
            items: list[str] = loader.as_str_list(value)
        except ValueError as exc:
            raise SettingsError(f"trusted_proxies: {exc}, found {value!r}") from exc
        for item in items:
            ipaddress.ip_network(item, strict=False)
        return items

    @field_validator("metrics_address")
    @classmethod
    def _metrics_address(cls, value: Optional[str]) -> Optional[str]:
        if value is None or value == "":
            return None
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"metrics_address: expected HOST:PORT such as 127.0.0.1:9464, found {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error"):
            raise SettingsError(f"log_level: expected debug, info, warning or error, found {value!r}")
        return value.lower()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+pysqlite:///{(self.data_dir / 'teleposture.db').resolve()}"

    @property
    def server_key_path(self) -> Path:
        return self.data_dir / SERVER_KEY_FILE

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None and self.tls_keyfile is not None


def _converter(name: str, annotation: Any) -> loader.Converter:
    """How a value from the environment, a flag or the file becomes the field's type (ranges: the model)."""
    if name in DURATION_FIELDS:
        return loader.as_positive_duration
    by_type: dict[Any, loader.Converter] = {
        bool: loader.as_bool, int: loader.as_int, float: loader.as_float, str: loader.as_str,
        Optional[str]: loader.as_str, Path: loader.as_path, Optional[Path]: loader.as_path,
        list[str]: loader.as_str_list,
    }
    return by_type[annotation]


# Defaults stay the model's: an option left unset is not passed to it.
OPTIONS = tuple(loader.Option(name, _converter(name, field.annotation)) for name, field in Settings.model_fields.items())


def load_settings(flags: Optional[Mapping[str, Any]] = None, environ: Optional[Mapping[str, str]] = None,
                  config_file: Optional[Path] = None) -> Settings:
    """Merge defaults < config file < environment < flags (None flags are ignored) and validate."""
    environ = os.environ if environ is None else environ
    flags = flags or {}
    data_dir = Path(flags.get("data_dir") or environ.get(loader.ENV_PREFIX + "DATA_DIR") or "./var")
    loaded = loader.load(OPTIONS, TABLE, flags, environ, config=config_file, default_config=data_dir / CONFIG_FILE)
    given = {name: value for name, value in loaded.values.items() if loaded.sources[name] != "default"}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(part) for part in err["loc"])
            source = loaded.sources.get(str(err["loc"][0]) if err["loc"] else "", "")
            problems.append(f"setting {name}{' from ' + source if source else ''}: {err['msg']}, "
                            f"found {err.get('input')!r}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from exc


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_reasons(settings: Settings) -> list[str]:
    """Why serving with these settings would be unsafe outside development (empty when it is fine).

    Insecure means: agents' reports or admin tokens could cross a network in clear text (a
    non-loopback bind without TLS and without behind_tls_proxy), a half TLS configuration, the
    server signing key readable by others, or a database password from a well-known default list.
    """
    reasons = []
    if (settings.tls_certfile is None) != (settings.tls_keyfile is None):
        reasons.append("TLS needs both tls_certfile and tls_keyfile; only one is set")
    if not _is_loopback(settings.host) and not settings.tls and not settings.behind_tls_proxy:
        reasons.append(f"binding {settings.host} (not loopback) without TLS: set tls_certfile and tls_keyfile, "
                       "or behind_tls_proxy = true when a reverse proxy terminates TLS")
    key = settings.server_key_path
    if key.exists():
        mode = stat.S_IMODE(key.stat().st_mode)
        if mode & 0o077:
            reasons.append(f"server signing key {key} is readable by others (mode {mode:o}): chmod 600 it")
    password = sa.engine.make_url(settings.resolved_database_url).password
    if password is not None and str(password) in DEFAULT_DB_PASSWORDS:
        reasons.append("the database password is a well-known default: set a real one in the database URL")
    return reasons
