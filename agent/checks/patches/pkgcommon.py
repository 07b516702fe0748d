"""Shared pieces of the Linux package-manager collectors (apt, dnf/yum, zypper)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence

from agent.checks.base import ParseError
from agent.checks.messages import Message, english, message
from agent.probes import NOT_FOUND, Host, ProbeResult

DAY = 86400.0


class ProbeFailure(Exception):
    """A probe the check cannot do without failed: the check is an error naming it."""

    def __init__(self, probe: ProbeResult, hint: Optional[Message] = None) -> None:
        failure = probe.failure_message()
        # The check's reason: the probe's failure, with the hint (what to do) when there is one.
        self.message = failure if hint is None else message("failure_hint", failure=failure, hint=hint)
        super().__init__(english(self.message))
        self.probe = probe
        self.hint = hint


class CannotJudge(Exception):
    """The probes worked but what they show cannot support a verdict (say why and what to do)."""

    def __init__(self, reason: Message) -> None:
        super().__init__(english(reason))
        self.message = reason


@dataclass
class Findings:
    """What one package-manager backend found: facts (by declared name) and evidence lines."""

    facts: Dict[str, Any] = field(default_factory=dict)
    evidence: List[str] = field(default_factory=list)


def require(probe: ProbeResult, ok_codes: Sequence[int] = (0,), hint: Optional[Message] = None) -> ProbeResult:
    """The probe ran and exited with an accepted code, or raise ProbeFailure."""
    if probe.error is not None or probe.rc not in ok_codes:
        raise ProbeFailure(probe, hint)
    return probe


def stat_mtime(host: Host, path: str) -> Optional[float]:
    """mtime of a path; None when it does not exist. Other failures are ProbeFailure."""
    probe = host.stat(path)
    if probe.error == NOT_FOUND:
        return None
    if probe.error is not None:
        raise ProbeFailure(probe)
    return parse_stat_mtime(probe.stdout, path)


def parse_stat_mtime(text: str, path: str) -> float:
    try:
        data = json.loads(text)
        return float(data["mtime"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"stat {path}: expected JSON with an mtime, found {text[:60]!r}") from exc


def file_exists(host: Host, path: str) -> bool:
    """True/False for a flag file (reboot-required); permission errors are ProbeFailure."""
    probe = host.stat(path)
    if probe.error == NOT_FOUND:
        return False
    if probe.error is not None:
        raise ProbeFailure(probe)
    return True


# names in package caches that are files (or package directories) never holding repository metadata
_NOT_METADATA_DIRS = (".solv", ".solvx", ".json", ".db", ".rpm", ".xml", ".gz", ".zst", ".xz", ".bz2",
                      ".sqlite", ".lock", ".pid", ".cookie", "last_makecache", "packages")


def find_files(host: Host, root: str, name: str, depth: int) -> List[str]:
    """Paths of files called ``name`` under ``root`` (at most ``depth`` levels), through the Host."""
    found: List[str] = []
    listing = host.listdir(root)
    if listing.error is not None:
        return found
    for entry in listing.stdout.splitlines():
        path = f"{root.rstrip('/')}/{entry}"
        if entry == name:
            found.append(path)
        elif depth > 1 and not entry.endswith(_NOT_METADATA_DIRS):
            found.extend(find_files(host, path, name, depth - 1))
    return found


def age_days(now: float, then: Optional[float]) -> Optional[float]:
    if then is None:
        return None
    return round(max(0.0, now - then) / DAY, 2)


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def naive_to_epoch(text: str, fmt: str, utc_offset_seconds: float = 0.0) -> float:
    """A local-time stamp without zone, plus the zone offset it was written in -> epoch seconds."""
    moment = datetime.strptime(" ".join(text.split()), fmt).replace(tzinfo=timezone.utc)
    return moment.timestamp() - utc_offset_seconds


def offset_from_mtime(last_local_stamp: Optional[float], file_mtime: Optional[float]) -> Optional[float]:
    """Guess the UTC offset a log was written in: its last line's local time (read as if UTC) vs the
    file's mtime (true epoch), rounded to 15 minutes. None when too far apart to be the same moment."""
    if last_local_stamp is None or file_mtime is None:
        return None
    delta = last_local_stamp - file_mtime
    quarter = round(delta / 900.0) * 900.0
    if abs(delta - quarter) > 300 or abs(quarter) > 14 * 3600:
        return None
    return quarter


def parse_os_release(text: str) -> Dict[str, str]:
    values: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value.strip().strip('"').strip("'")
    return values


def parse_systemctl_is_enabled(probe: ProbeResult) -> Optional[bool]:
    """``systemctl is-enabled UNIT`` -> True (enabled/static/alias...), False (disabled/masked/not found),
    None when systemctl itself could not answer (no systemd)."""
    if probe.error is not None:
        return None
    state = probe.stdout.strip().splitlines()[0].strip() if probe.stdout.strip() else ""
    if state in ("enabled", "enabled-runtime", "static", "alias", "indirect", "generated"):
        return True
    if state in ("disabled", "masked", "masked-runtime", "linked", "linked-runtime", "transient", "bad"):
        return False
    if "No such file" in probe.stderr or "not-found" in state or probe.rc == 1 and not state:
        return False
    return None


def parse_ini_value(text: str, section: str, key: str) -> Optional[str]:
    """The value of ``key`` in ``[section]`` of an ini file such as /etc/dnf/automatic.conf."""
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            continue
        name, sep, value = line.partition("=")
        if sep and current == section and name.strip() == key:
            return value.strip()
    return None


def truthy(value: Optional[str]) -> bool:
    return (value or "").strip().strip('"').lower() in ("1", "yes", "true", "on")


def positional_words(words: Sequence[str], options_with_value: Sequence[str] = ()) -> List[str]:
    """The words of a package-manager command line that are not options nor options' values.

    ``words`` starts after the program name: ``-o Dir::Etc=x install --no-upgrade foo`` -> ``[install, foo]``.
    """
    found: List[str] = []
    skip_next = False
    for word in words:
        if skip_next:
            skip_next = False
            continue
        if word.startswith("-"):
            # "-o X" and "--option X" take the next word; "-oX" and "--option=X" carry it
            skip_next = word in options_with_value
            continue
        found.append(word)
    return found


def subcommand(words: Sequence[str], options_with_value: Sequence[str] = ()) -> Optional[str]:
    """What a package-manager transaction was: the first positional word (`positional_words`), never a
    word found anywhere in the line (a package named ``unattended-upgrades`` or ``--no-upgrade`` is not an
    upgrade)."""
    positional = positional_words(words, options_with_value)
    return positional[0] if positional else None
